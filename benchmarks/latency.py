"""Latency benchmark: TFLite's default path (XNNPACK) vs the tfpconv delegate on pruned CNNs.

For each model (VGG-16 at 32x32 and 224x224, ResNet-18 and ResNet-50 at 224x224) and each
connectivity (0, 0.5, 0.72, all with 8 patterns): prune the model in one shot, convert it with
``tfpconv.convert(..., tune=True)`` (``--no-tune``: engine defaults), and time both paths
interleaved in this process (medians), per layer too. Writes ``latency.json``, ``latency.md``
(with the issue's speed targets, met or not) and ``latency.png`` (speedup vs connectivity).

    python3 benchmarks/latency.py                              # everything (about 40 minutes)
    python3 benchmarks/latency.py --models vgg16_32 --connectivity 0.72 --threads 1 --runs 5
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.runtime import bench  # noqa: E402
from tfpconv.runtime.bench_report import BenchReport, write_report  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402

MODELS = {
    "vgg16_224": lambda: tfpconv.models.vgg16((224, 224, 3)),
    "vgg16_32": lambda: tfpconv.models.vgg16((32, 32, 3), num_classes=10),
    "resnet18": lambda: tfpconv.models.resnet18((224, 224, 3)),
    "resnet50": lambda: tfpconv.models.resnet50((224, 224, 3)),
}


#: The issue's speed targets: (model, connectivity, what, minimum ratio).
TARGETS = [
    ("vgg16_224", 0.72, "1 thread vs XNNPACK", 3.0),
    ("resnet18", 0.72, "1 thread vs XNNPACK", 2.0),
    ("vgg16_32", 0.72, "1 thread vs XNNPACK", 2.0),
    ("vgg16_224", 0.0, "1 thread vs XNNPACK", 1.0),
    ("vgg16_224", 0.72, "delegate 2 threads vs 1", 1.7),
]


def build_converted(name: str, connectivity: float, model_dir: Path, tune: bool) -> Path:
    """The pruned, converted model (cached on disk: conversion of VGG-16 takes a while)."""
    suffix = "_tuned" if tune else ""
    path = model_dir / f"{name}_8p_c{connectivity:.2f}{suffix}.tflite"
    if not path.exists():
        keras.utils.set_random_seed(0)
        model = MODELS[name]()
        tfpconv.prune_patterns(model, num_patterns=8, connectivity=connectivity)
        tfpconv.convert(model, output_path=path, tune=tune)
    return path


def target_lines(reports: dict[tuple[str, float], BenchReport]) -> list[str]:
    """One line per speed target whose runs are in `reports`: measured ratio and verdict."""
    lines = []
    for name, connectivity, what, minimum in TARGETS:
        report = reports.get((name, connectivity))
        if report is None:
            continue
        by_threads = {r.threads: r for r in report.results}
        if what.startswith("delegate 2 threads"):
            ratio = report.thread_ratio("delegate", 1, 2)
            if ratio is None:
                continue
        elif 1 in by_threads:
            ratio = by_threads[1].speedup
        else:
            continue
        verdict = "met" if ratio >= minimum else "NOT met"
        lines.append(
            f"| {name} | {connectivity:.2f} | {what} | >= {minimum:.1f}x | {ratio:.2f}x "
            f"| {verdict} |"
        )
    if lines:
        lines = [
            "| model | connectivity | ratio | target | measured | |",
            "|---|---|---|---|---|---|",
            *lines,
        ]
    return lines


def plot(reports: dict[tuple[str, float], BenchReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for model in sorted({name for name, _ in reports}):
        points = sorted((c, r) for (n, c), r in reports.items() if n == model)
        for threads in sorted({t.threads for _, r in points for t in r.results}):
            xs = [c for c, r in points for t in r.results if t.threads == threads]
            ys = [t.speedup for _, r in points for t in r.results if t.threads == threads]
            axis.plot(xs, ys, marker="o", label=f"{model}, {threads} thread(s)")
    axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xlabel("connectivity (fraction of 3x3 kernels removed), 8 patterns")
    axis.set_ylabel("speedup vs XNNPACK (end to end)")
    axis.set_title("tfpconv delegate vs TFLite XNNPACK")
    axis.legend(fontsize=8)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, dpi=120, format="png")
    plt.close(figure)
    write_atomic(path, image.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--connectivity", nargs="*", type=float, default=[0.0, 0.5, 0.72])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer timing")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model-dir", type=Path, default=Path("runs/latency_models"))
    parser.add_argument(
        "--no-tune", action="store_true", help="convert without tune=True (engine defaults)"
    )
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    args.model_dir.mkdir(parents=True, exist_ok=True)

    reports: dict[tuple[str, float], BenchReport] = {}
    start = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("starting", total=len(args.models) * len(args.connectivity))
        for name in args.models:
            for connectivity in args.connectivity:
                label = f"{name} c={connectivity:.2f}"
                progress.update(task, description=f"{label}: pruning + converting")
                path = build_converted(name, connectivity, args.model_dir, not args.no_tune)
                reports[(name, connectivity)] = bench.bench(
                    path,
                    threads=threads,
                    runs=args.runs,
                    layers=not args.no_layers,
                    memory=not args.no_memory,
                    progress=lambda message, lbl=label: progress.update(
                        task, description=f"{lbl}: {message}"
                    ),
                )
                progress.advance(task)
                for result in reports[(name, connectivity)].results:
                    progress.console.print(
                        f"{label}, {result.threads} thread(s): XNNPACK {result.xnnpack_ms:.2f} ms, "
                        f"tfpconv {result.delegate_ms:.2f} ms, {result.speedup:.2f}x"
                    )
    write_report(list(reports.values()), args.out, "latency")
    targets = target_lines(reports)
    summary = summary_table(reports) + ("\n\nTargets:\n\n" + "\n".join(targets) if targets else "")
    markdown = args.out / "latency.md"
    write_atomic(markdown, f"## Summary\n\n{summary}\n\n{markdown.read_text()}".encode())
    plot(reports, args.out / "latency.png")
    print(f"\nwrote {args.out}/latency.{{json,md,png}} in {time.perf_counter() - start:.0f} s")
    print(summary)


def summary_table(reports: dict[tuple[str, float], BenchReport]) -> str:
    lines = [
        "| model | connectivity | threads | XNNPACK ms | tfpconv ms | speedup |",
        "|---|---|---|---|---|---|",
    ]
    for (name, connectivity), report in reports.items():
        for r in report.results:
            lines.append(
                f"| {name} | {connectivity:.2f} | {r.threads} | {r.xnnpack_ms:.2f} | "
                f"{r.delegate_ms:.2f} | {r.speedup:.2f}x |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
