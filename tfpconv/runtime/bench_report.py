"""The latency report of ``tfpconv bench``: per thread count and per layer, as JSON and markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfpconv.tflite.files import write_atomic


@dataclass
class LayerTiming:
    """One planned convolution timed alone (XNNPACK dense vs delegate)."""

    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weights: int
    weights_kept: int
    xnnpack_ms: float
    delegate_ms: float
    claimed: bool

    @property
    def speedup(self) -> float:
        return self.xnnpack_ms / self.delegate_ms

    @property
    def pixels(self) -> int:
        return int(np.prod(self.output_shape[:-1]))

    @property
    def xnnpack_gflops(self) -> float:
        """XNNPACK's dense GFLOP/s (all 9 taps of every kernel)."""
        return 2 * self.pixels * self.weights / (self.xnnpack_ms * 1e6)

    @property
    def delegate_effective_gflops(self) -> float:
        """The delegate's GFLOP/s counting only the non-zero weights."""
        return 2 * self.pixels * self.weights_kept / (self.delegate_ms * 1e6)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            speedup=self.speedup,
            xnnpack_gflops=self.xnnpack_gflops,
            delegate_effective_gflops=self.delegate_effective_gflops,
        )
        return data


@dataclass
class ThreadResult:
    """End-to-end figures at one thread count."""

    threads: int
    xnnpack_ms: float
    delegate_ms: float
    max_abs_diff: float
    max_rel_diff: float
    delegated_nodes: int
    packed_weight_bytes: int
    layers: list[LayerTiming] = field(default_factory=list)
    xnnpack_peak_mb: float | None = None
    delegate_peak_mb: float | None = None

    @property
    def speedup(self) -> float:
        return self.xnnpack_ms / self.delegate_ms

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speedup"] = self.speedup
        data["layers"] = [layer.to_dict() for layer in self.layers]
        return data


@dataclass
class BenchReport:
    """What :func:`bench` measured for one model."""

    model: str
    planned_convs: int
    weights: int
    weights_kept: int
    results: list[ThreadResult]
    #: With several thread counts: median ms per path ("xnnpack", "delegate") and thread count,
    #: every configuration timed in one interleaved loop (the fair basis for thread ratios).
    scaling: dict[str, dict[int, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "planned_convs": self.planned_convs,
            "dense_conv_weights": self.weights,
            "kept_conv_weights": self.weights_kept,
            "results": [r.to_dict() for r in self.results],
            "thread_scaling_ms": self.scaling,
        }

    def thread_ratio(self, path: str, few: int, many: int) -> float | None:
        """How many times faster `path` runs with `many` threads than with `few`, side by side."""
        times = self.scaling.get(path, {})
        if few not in times or many not in times:
            return None
        return times[few] / times[many]

    def markdown(self) -> str:
        lines = [
            f"### {self.model}",
            "",
            f"{self.planned_convs} planned convolutions, {self.weights_kept}/{self.weights}"
            f" 3x3 weights kept ({self.weights / max(self.weights_kept, 1):.2f}x fewer).",
            "",
            "| threads | XNNPACK ms | tfpconv ms | speedup | delegated nodes | max rel diff |"
            " packed / dense 3x3 weight MB | peak MB (XNNPACK / tfpconv) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            memory = (
                "n/a"
                if r.xnnpack_peak_mb is None
                else f"{r.xnnpack_peak_mb:.0f} / {r.delegate_peak_mb:.0f}"
            )
            lines.append(
                f"| {r.threads} | {r.xnnpack_ms:.2f} | {r.delegate_ms:.2f} | {r.speedup:.2f}x | "
                f"{r.delegated_nodes} | {r.max_rel_diff:.1e} | {r.packed_weight_bytes / 1e6:.2f}"
                f" / {4 * self.weights / 1e6:.2f} | {memory} |"
            )
        if self.scaling:
            counts = sorted(self.scaling["delegate"])
            lines += ["", "Thread scaling, every configuration interleaved in one loop:", ""]
            for path, label in (("xnnpack", "XNNPACK"), ("delegate", "tfpconv")):
                times = ", ".join(f"{c} thread(s) {self.scaling[path][c]:.2f} ms" for c in counts)
                ratio = self.thread_ratio(path, counts[0], counts[-1])
                lines.append(f"- {label}: {times} ({counts[-1]} vs {counts[0]}: {ratio:.2f}x)")
        for r in self.results:
            if not r.layers:
                continue
            lines += [
                "",
                f"Per layer, {r.threads} thread(s):",
                "",
                "| layer | output | kept/dense weights | XNNPACK ms | tfpconv ms | speedup |"
                " XNNPACK dense GFLOP/s | tfpconv effective GFLOP/s |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for t in r.layers:
                lines.append(
                    f"| {t.name} | {'x'.join(map(str, t.output_shape[1:]))} | "
                    f"{t.weights_kept}/{t.weights} | {t.xnnpack_ms:.3f} | "
                    f"{t.delegate_ms:.3f} | {t.speedup:.2f}x | {t.xnnpack_gflops:.1f} | "
                    f"{t.delegate_effective_gflops:.1f} |"
                )
        return "\n".join(lines) + "\n"


def write_report(reports: Sequence[BenchReport], out_dir: Path, stem: str = "latency") -> None:
    """JSON and markdown of several reports, each file replaced atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out_dir / f"{stem}.json",
        (json.dumps([r.to_dict() for r in reports], indent=2) + "\n").encode(),
    )
    write_atomic(out_dir / f"{stem}.md", "\n".join(r.markdown() for r in reports).encode())
