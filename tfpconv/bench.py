"""Latency of a converted model: TFLite's default path (XNNPACK) vs the tfpconv delegate.

Both interpreters load the same .tflite and are timed interleaved in one process (run i of one,
then run i of the other), so drifting machine load hits both alike. Reports medians, the ratio,
agreement of the outputs, per-layer figures (each planned convolution re-built as a one-layer
model and timed the same way) and peak memory (each configuration in a fresh process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfpconv import plan as plan_module
from tfpconv import runtime
from tfpconv.convert import write_atomic
from tfpconv.tflite_model import TFLiteModel, schema, tensor_shape, unpack_float32

_ACTIVATIONS = {
    schema.ActivationFunctionType.NONE: None,
    schema.ActivationFunctionType.RELU: "relu",
    schema.ActivationFunctionType.RELU6: "relu6",
}


@dataclass
class LayerTiming:
    """One planned convolution timed alone (XNNPACK dense vs delegate)."""

    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dense_weights: int
    kept_weights: int
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
        return 2 * self.pixels * self.dense_weights / (self.xnnpack_ms * 1e6)

    @property
    def delegate_effective_gflops(self) -> float:
        """The delegate's GFLOP/s counting only the non-zero weights."""
        return 2 * self.pixels * self.kept_weights / (self.delegate_ms * 1e6)

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
    dense_weights: int
    kept_weights: int
    results: list[ThreadResult]
    #: With several thread counts: median ms per path ("xnnpack", "delegate") and thread count,
    #: every configuration timed in one interleaved loop (the fair basis for thread ratios).
    scaling: dict[str, dict[int, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "planned_convs": self.planned_convs,
            "dense_conv_weights": self.dense_weights,
            "kept_conv_weights": self.kept_weights,
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
            f"{self.planned_convs} planned convolutions, {self.kept_weights}/{self.dense_weights}"
            f" 3x3 weights kept ({self.dense_weights / max(self.kept_weights, 1):.2f}x fewer).",
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
                f" / {4 * self.dense_weights / 1e6:.2f} | {memory} |"
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
                    f"{t.kept_weights}/{t.dense_weights} | {t.xnnpack_ms:.3f} | "
                    f"{t.delegate_ms:.3f} | {t.speedup:.2f}x | {t.xnnpack_gflops:.1f} | "
                    f"{t.delegate_effective_gflops:.1f} |"
                )
        return "\n".join(lines) + "\n"


def _random_inputs(interpreter: Any, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    inputs = []
    for detail in interpreter.get_input_details():
        shape = [max(int(d), 1) for d in detail["shape"]]
        inputs.append((detail["index"], rng.uniform(0, 1, shape).astype(detail["dtype"])))
    return inputs


def interleaved_latencies(
    interpreters: Sequence[Any], runs: int, warmup: int = 2
) -> list[np.ndarray]:
    """Milliseconds per ``invoke()`` of each interpreter, the runs interleaved."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for interpreter in interpreters:
        for index, value in _random_inputs(interpreter):
            interpreter.set_tensor(index, value)
        for _ in range(warmup):
            interpreter.invoke()
    times = np.zeros((len(interpreters), runs))
    for run in range(runs):
        for i, interpreter in enumerate(interpreters):
            start = time.perf_counter()
            interpreter.invoke()
            times[i, run] = (time.perf_counter() - start) * 1e3
    return list(times)


def _outputs(interpreter: Any) -> list[np.ndarray]:
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def _pair(model: bytes, threads: int) -> tuple[Any, Any]:
    plain = runtime.Interpreter(model_content=model, num_threads=threads, use_delegate=False)
    fast = runtime.Interpreter(model_content=model, num_threads=threads, use_delegate=True)
    plain.allocate_tensors()
    fast.allocate_tensors()
    return plain, fast


def _compare(model: bytes, threads: int, runs: int) -> tuple[float, float, float, float, int, int]:
    plain, fast = _pair(model, threads)
    plain_ms, fast_ms = interleaved_latencies([plain, fast], runs)
    diffs = [
        (np.max(np.abs(a - b)), np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
        for a, b in zip(_outputs(plain), _outputs(fast), strict=True)
    ]
    return (
        float(np.median(plain_ms)),
        float(np.median(fast_ms)),
        float(max(d[0] for d in diffs)),
        float(max(d[1] for d in diffs)),
        len(fast.delegated_nodes()),
        fast.packed_weight_bytes(),
    )


def thread_scaling(model: bytes, threads: Sequence[int], runs: int) -> dict[str, dict[int, float]]:
    """Median ms of XNNPACK and of the delegate at every thread count, all interleaved."""
    counts = sorted(set(threads))
    interpreters = [interpreter for count in counts for interpreter in _pair(model, count)]
    medians = [float(np.median(t)) for t in interleaved_latencies(interpreters, runs)]
    return {
        "xnnpack": dict(zip(counts, medians[0::2], strict=True)),
        "delegate": dict(zip(counts, medians[1::2], strict=True)),
    }


def single_conv_model(model: TFLiteModel, conv: plan_module.ConvPlan) -> bytes:
    """The planned CONV_2D re-built alone (same input shape, weights, bias, options), converted."""
    import keras

    from tfpconv.convert import convert

    op = model.model.subgraphs[conv.subgraph_index].operators[conv.operator_index]
    options = op.builtinOptions
    inputs = [int(i) for i in op.inputs]
    input_shape = tensor_shape(model.tensor(conv.subgraph_index, inputs[0]))
    weights = unpack_float32(model.tensor_data(conv.subgraph_index, inputs[1]))
    weights = weights.reshape(conv.kernel_shape).transpose(1, 2, 3, 0)  # OHWI -> HWIO
    bias_data = (
        model.tensor_data(conv.subgraph_index, inputs[2])
        if len(inputs) > 2 and inputs[2] >= 0
        else None
    )
    layer = keras.layers.Conv2D(
        conv.out_channels,
        3,
        strides=(options.strideH, options.strideW),
        padding="same" if options.padding == schema.Padding.SAME else "valid",
        activation=_ACTIVATIONS.get(options.fusedActivationFunction),
        use_bias=bias_data is not None,
    )
    keras_model = keras.Sequential([keras.Input(tuple(input_shape[1:]), batch_size=1), layer])
    layer.set_weights([weights] + ([unpack_float32(bias_data)] if bias_data is not None else []))
    return convert(keras_model)


def per_layer(
    model_bytes: bytes,
    threads: int,
    runs: int,
    progress: Callable[[str], None] | None = None,
) -> list[LayerTiming]:
    """Each planned convolution of the model timed alone, XNNPACK vs the delegate."""
    from tfpconv.convert import inspect_model

    model = TFLiteModel.from_bytes(model_bytes)
    plan = plan_module.read_plan(model_bytes)
    names = {
        (r.subgraph_index, r.operator_index): r.name for r in inspect_model(model_bytes).layers
    }
    timings = []
    for conv in plan.convs:
        name = names[(conv.subgraph_index, conv.operator_index)]
        if progress is not None:
            progress(name)
        single = single_conv_model(model, conv)
        plain, fast = _pair(single, threads)
        plain_ms, fast_ms = interleaved_latencies([plain, fast], runs)
        timings.append(
            LayerTiming(
                name=name,
                input_shape=tuple(int(d) for d in plain.get_input_details()[0]["shape"]),
                output_shape=tuple(int(d) for d in plain.get_output_details()[0]["shape"]),
                dense_weights=conv.dense_weights,
                kept_weights=conv.kept_weights,
                xnnpack_ms=float(np.median(plain_ms)),
                delegate_ms=float(np.median(fast_ms)),
                claimed=bool(fast.delegated_nodes()),
            )
        )
    return timings


_PEAK_SCRIPT = """
import sys
import numpy as np
from tfpconv import runtime

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current resident size
before = status("VmRSS")
interpreter = runtime.Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]),
                                  use_delegate=sys.argv[3] == "1")
interpreter.allocate_tensors()
for d in interpreter.get_input_details():
    interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
interpreter.invoke()
print(status("VmHWM") - before)
"""


def peak_memory_mb(model_path: str | os.PathLike[str], threads: int, use_delegate: bool) -> float:
    """Peak resident memory added by loading and running the model once, in a fresh process."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_SCRIPT,
            os.fspath(model_path),
            str(threads),
            "1" if use_delegate else "0",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    if result.returncode != 0:
        raise RuntimeError(f"peak memory run failed: {result.stderr.strip()[-500:]}")
    return float(result.stdout.strip().splitlines()[-1])


def bench(
    model_path: str | os.PathLike[str],
    threads: Sequence[int] = (1,),
    runs: int = 10,
    layers: bool = True,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Time a tfpconv-converted model with XNNPACK and with the delegate, side by side.

    Args:
      model_path: a .tflite file written by ``tfpconv.convert``.
      threads: thread counts to measure (for both paths).
      runs: timed runs per configuration (medians are reported; the interleaved thread-scaling
        loop, run when several thread counts are given, takes three times as many).
      layers: also time every planned convolution alone.
      memory: also measure peak memory of each path (fresh processes).
      progress: called with a short description before each step.
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    plan = plan_module.read_plan(path)  # errors name the file
    data = path.read_bytes()
    say = progress or (lambda _message: None)
    results = []
    for count in threads:
        say(f"{path.name}: end to end, {count} thread(s)")
        result = ThreadResult(count, *_compare(data, count, runs))
        if layers:
            result.layers = per_layer(
                data, count, runs, lambda name, c=count: say(f"{path.name}: {name}, {c} thread(s)")
            )
        if memory:
            say(f"{path.name}: peak memory, {count} thread(s)")
            result.xnnpack_peak_mb = peak_memory_mb(path, count, False)
            result.delegate_peak_mb = peak_memory_mb(path, count, True)
        results.append(result)
    scaling = {}
    if len(set(threads)) > 1:
        say(f"{path.name}: thread scaling, {len(set(threads))} thread counts interleaved")
        # Cheap next to the per-layer runs, and the ratio of two noisy medians wants more runs.
        scaling = thread_scaling(data, threads, 3 * runs)
    return BenchReport(
        model=path.name,
        planned_convs=len(plan.convs),
        dense_weights=sum(c.dense_weights for c in plan.convs),
        kept_weights=sum(c.kept_weights for c in plan.convs),
        results=results,
        scaling=scaling,
    )


def write_report(reports: Sequence[BenchReport], out_dir: Path, stem: str = "latency") -> None:
    """JSON and markdown of several reports, each file replaced atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out_dir / f"{stem}.json",
        (json.dumps([r.to_dict() for r in reports], indent=2) + "\n").encode(),
    )
    write_atomic(out_dir / f"{stem}.md", "\n".join(r.markdown() for r in reports).encode())
