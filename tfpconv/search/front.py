"""A search's result: the latency / accuracy front, the baselines, a table, a plot, select()."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tfpconv.search.space import Candidate
from tfpconv.tflite.files import write_atomic

__all__ = ["Front", "FrontEntry", "select"]


@dataclass
class FrontEntry:
    """One evaluated candidate: predicted (table) and measured (built, converted, timed) latency,
    validation accuracy, non-zero weights and FLOPs per image."""

    candidate: Candidate
    predicted_ms: float
    accuracy: float
    flops: int
    weights: int
    measured_ms: float | None = None
    trial: int | None = None

    @property
    def latency_ms(self) -> float:
        """The measured latency where known, else the prediction."""
        return self.measured_ms if self.measured_ms is not None else self.predicted_ms


@dataclass
class Front:
    """Pareto-optimal candidates (fastest first) and the uniform baselines, by name."""

    entries: list[FrontEntry]
    baselines: dict[str, list[FrontEntry]] = field(default_factory=dict)
    anchors_ms: list[float] = field(default_factory=list)
    dense_ms: float | None = None

    def to_json(self) -> str:
        def plain(entries: list[FrontEntry]) -> list[dict]:
            return [asdict(e) for e in entries]

        return json.dumps(
            {
                "kind": "tfpconv-search-front",
                "entries": plain(self.entries),
                "baselines": {k: plain(v) for k, v in self.baselines.items()},
                "anchors_ms": self.anchors_ms,
                "dense_ms": self.dense_ms,
            },
            indent=1,
        )

    def save(self, path: str | Path) -> None:
        write_atomic(path, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> Front:
        try:
            data = json.loads(Path(path).read_text())
            if data.get("kind") != "tfpconv-search-front":
                raise KeyError("kind")

            def entries(items: list[dict]) -> list[FrontEntry]:
                return [
                    FrontEntry(**{**item, "candidate": Candidate(**item["candidate"])})
                    for item in items
                ]

            return cls(
                entries(data["entries"]),
                {k: entries(v) for k, v in data["baselines"].items()},
                list(data["anchors_ms"]),
                data["dense_ms"],
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a tfpconv search front ({err})") from None

    def markdown(self) -> str:
        """The front as a Markdown table, one row per candidate (genes in the last column)."""
        lines = [
            "| predicted ms | measured ms | accuracy | MFLOPs | weights | widths | connectivity |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in self.entries:
            measured = f"{e.measured_ms:.3f}" if e.measured_ms is not None else "-"
            widths = " ".join(f"{k}={v:g}" for k, v in e.candidate.widths.items())
            conn = " ".join(
                f"{k}={'dense' if v is None else format(v, 'g')}"
                for k, v in e.candidate.connectivity.items()
            )
            lines.append(
                f"| {e.predicted_ms:.3f} | {measured} | {100 * e.accuracy:.2f}% | "
                f"{e.flops / 1e6:.2f} | {e.weights} | {widths} | {conn} |"
            )
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str = "tfpconv search") -> None:
        """Latency vs accuracy: the front, the baselines and the anchors, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(7, 4.5))
        axes.plot(
            [e.latency_ms for e in self.entries],
            [100 * e.accuracy for e in self.entries],
            "o-",
            label="searched front (JCW)",
        )
        for name, entries in self.baselines.items():
            ordered = sorted(entries, key=lambda e: e.latency_ms)
            axes.plot(
                [e.latency_ms for e in ordered],
                [100 * e.accuracy for e in ordered],
                "s--",
                label=name,
            )
        for anchor in self.anchors_ms:
            axes.axvline(anchor, color="grey", linewidth=0.6, linestyle=":")
        axes.set_xlabel("latency (ms, measured where known)")
        axes.set_ylabel("validation accuracy (%)")
        axes.set_title(title)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)


def select(front: Front, latency_ms: float) -> FrontEntry:
    """The most accurate front candidate whose latency (measured where known) is within
    ``latency_ms``.

    Raises:
      ValueError: no candidate is that fast (the message names the fastest).
    """
    fitting = [e for e in front.entries if e.latency_ms <= latency_ms]
    if not fitting:
        fastest = min((e.latency_ms for e in front.entries), default=float("nan"))
        raise ValueError(
            f"no candidate of the front runs within {latency_ms:g} ms (the fastest takes "
            f"{fastest:.3f} ms); raise the budget or search with a lower anchor"
        )
    return max(fitting, key=lambda e: (e.accuracy, -e.latency_ms))
