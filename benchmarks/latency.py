"""Latency benchmark: TFLite's default path (XNNPACK) vs the tfpconv delegate on pruned CNNs.

For each model (VGG-16 at 32x32 and 224x224, ResNet-18 and ResNet-50 at 224x224), each
connectivity (0, 0.5, 0.72, all with 8 patterns) and each connectivity allocation (uniform,
erdos_renyi): prune the model in one shot, convert it with ``tfpconv.convert(..., tune=True)``
(``--no-tune``: engine defaults), and time both paths interleaved in this process (medians), per
layer too, with the effective GFLOP/s on the non-zero weights next to XNNPACK's dense GFLOP/s.
Writes ``latency_<isa>.json``, ``latency_<isa>.md`` (with the speed targets, met or not, and the
CPU) and ``latency_<isa>.png`` (speedup vs connectivity), ``<isa>`` being the instruction set the
engine runs here (``avx512``, ``avx2``, ...).

    python3 benchmarks/latency.py                              # everything (about 40 minutes)
    python3 benchmarks/latency.py --models vgg16_32 --connectivity 0.72 --threads 1 --runs 5
    python3 benchmarks/latency.py --targets --no-tune          # only the runs the targets need
    python3 benchmarks/latency.py --targets --no-tune --isa avx2   # the AVX2 kernels on this CPU
    python3 benchmarks/latency.py --targets --no-tune --filter-group 4   # latency_..._fg4.*
    python3 benchmarks/latency.py --targets --no-tune --filter-group 1   # latency_..._fg1.*

The models are pruned with ``filter_group="auto"``, ``prune_patterns``' default: 4 consecutive
filters share their patterns and kept input channels where a BatchNormalization follows the
convolution (ResNet-18 and -50), none elsewhere (VGG-16). ``--filter-group G`` prunes every layer
with ``filter_group=G`` instead (``1``: every filter on its own; results go to their own files,
``latency_..._fg<G>.*``, and their targets are printed for comparison).
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# NumPy's OpenBLAS threads spin on the other core after any BLAS call (2% of the samples in a
# ResNet-50 profile); timing needs both cores for the runs themselves.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import keras  # noqa: E402
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.runtime import bench  # noqa: E402
from tfpconv.runtime.bench_report import BenchReport, write_report  # noqa: E402
from tfpconv.runtime.latency_table import machine_facts  # noqa: E402
from tfpconv.runtime.machine import cpu_slug  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402

MODELS = {
    "vgg16_224": lambda: tfpconv.models.vgg16((224, 224, 3)),
    "vgg16_32": lambda: tfpconv.models.vgg16((32, 32, 3), num_classes=10),
    "resnet18": lambda: tfpconv.models.resnet18((224, 224, 3)),
    "resnet50": lambda: tfpconv.models.resnet50((224, 224, 3)),
}


#: A benchmarked configuration: (model, connectivity, connectivity allocation).
Config = tuple[str, float, str]

#: The engine's speed targets (default conversion, 8 patterns): (model, connectivity, allocation,
#: what, minimum ratio).
TARGETS = [
    ("vgg16_224", 0.72, "uniform", "1 thread vs XNNPACK", 3.5),
    ("vgg16_224", 0.0, "uniform", "1 thread vs XNNPACK", 1.2),
    ("resnet18", 0.72, "uniform", "1 thread vs XNNPACK", 2.5),
    ("resnet50", 0.72, "uniform", "1 thread vs XNNPACK", 1.5),
    ("vgg16_32", 0.72, "uniform", "1 thread vs XNNPACK", 2.5),
    ("vgg16_224", 0.72, "uniform", "delegate 2 threads vs 1", 1.8),
    ("vgg16_224", 0.72, "erdos_renyi", "1 thread vs XNNPACK", 2.5),
]


def filter_group_arg(text: str) -> int | str:
    """``--filter-group``: ``auto`` or a positive integer."""
    return text if text == "auto" else int(text)


def build_converted(
    config: Config, model_dir: Path, tune: bool, filter_group: int | str = "auto"
) -> Path:
    """The pruned, converted model (cached on disk: conversion of VGG-16 takes a while)."""
    name, connectivity, allocation = config
    suffix = ("_er" if allocation == "erdos_renyi" else "") + ("_tuned" if tune else "")
    suffix += f"_fg{filter_group}"
    path = model_dir / f"{name}_8p_c{connectivity:.2f}{suffix}.tflite"
    if not path.exists():
        keras.utils.set_random_seed(0)
        model = MODELS[name]()
        tfpconv.prune_patterns(
            model,
            num_patterns=8,
            connectivity=connectivity,
            connectivity_allocation=allocation,
            filter_group=filter_group,
        )
        tfpconv.convert(model, output_path=path, tune=tune)
    return path


def label_of(config: Config) -> str:
    name, connectivity, allocation = config
    return f"{name} c={connectivity:.2f}" + (f" {allocation}" if allocation != "uniform" else "")


def target_lines(reports: dict[Config, BenchReport]) -> list[str]:
    """One line per speed target whose runs are in `reports`: measured ratio and verdict."""
    lines = []
    for name, connectivity, allocation, what, minimum in TARGETS:
        report = reports.get((name, connectivity, allocation))
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
            f"| {name} | {connectivity:.2f} | {allocation} | {what} | >= {minimum:.1f}x "
            f"| {ratio:.2f}x | {verdict} |"
        )
    if lines:
        lines = [
            "| model | connectivity | allocation | ratio | target | measured | |",
            "|---|---|---|---|---|---|---|",
            *lines,
        ]
    return lines


def plot(reports: dict[Config, BenchReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for model in sorted({name for name, _, allocation in reports if allocation == "uniform"}):
        points = sorted((c, r) for (n, c, a), r in reports.items() if n == model and a == "uniform")
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
    parser.add_argument(
        "--allocation",
        nargs="*",
        default=["uniform"],
        choices=["uniform", "erdos_renyi"],
        help="connectivity allocations to run (erdos_renyi: only at connectivity > 0)",
    )
    parser.add_argument(
        "--targets",
        action="store_true",
        help="run exactly the configurations the speed targets name (overrides the lists)",
    )
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer timing")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model-dir", type=Path, default=Path("runs/latency_models"))
    parser.add_argument(
        "--no-tune", action="store_true", help="convert without tune=True (engine defaults)"
    )
    parser.add_argument(
        "--isa",
        choices=["avx512", "avx2", "scalar"],
        help="run the delegate with this instruction set's kernels (XNNPACK keeps its best ones; "
        "results go to latency_<isa>_on_<cpu isa>_<cpu>.*); with --no-tune, as tuning times the "
        "best instruction set",
    )
    parser.add_argument(
        "--filter-group",
        type=filter_group_arg,
        default="auto",
        help="prune with filter_group=G, an integer or auto (the default; an integer's results "
        "go to latency_..._fg<G>.*)",
    )
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    args.model_dir.mkdir(parents=True, exist_ok=True)
    if args.targets:
        configs = list(dict.fromkeys((m, c, a) for m, c, a, _, _ in TARGETS))
    else:
        configs = [
            (name, connectivity, allocation)
            for name in args.models
            for connectivity in args.connectivity
            for allocation in args.allocation
            if allocation == "uniform" or connectivity > 0
        ]

    reports: dict[Config, BenchReport] = {}
    start = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("starting", total=len(configs))
        for config in configs:
            label = label_of(config)
            progress.update(task, description=f"{label}: pruning + converting")
            path = build_converted(config, args.model_dir, not args.no_tune, args.filter_group)
            reports[config] = bench.bench(
                path,
                threads=threads,
                runs=args.runs,
                layers=not args.no_layers,
                memory=not args.no_memory,
                progress=lambda message, lbl=label: progress.update(
                    task, description=f"{lbl}: {message}"
                ),
                delegate_options={"isa": args.isa} if args.isa else None,
            )
            progress.advance(task)
            for result in reports[config].results:
                progress.console.print(
                    f"{label}, {result.threads} thread(s): XNNPACK {result.xnnpack_ms:.2f} ms, "
                    f"tfpconv {result.delegate_ms:.2f} ms, {result.speedup:.2f}x"
                )
    facts = machine_facts(threads=1)
    cpu_tag = cpu_slug(facts["cpu"], facts["microarchitecture"])
    engine_isa, stem = facts["isa"], f"latency_{facts['isa']}_{cpu_tag}"
    if args.isa and args.isa != facts["isa"]:
        engine_isa = f"{args.isa} (forced; the CPU runs {facts['isa']}, XNNPACK its best kernels)"
        stem = f"latency_{args.isa}_on_{facts['isa']}_{cpu_tag}"
    if args.filter_group != "auto":
        stem += f"_fg{args.filter_group}"
    write_report(list(reports.values()), args.out, stem)
    targets = target_lines(reports)
    conversion = "engine defaults (no tuning)" if args.no_tune else "tune=True"
    if args.filter_group != "auto":
        conversion += f", pruned with filter_group={args.filter_group}"
    summary = (
        f"Machine: {facts['cpu']} ({facts['microarchitecture'] or 'micro-architecture unknown'}), "
        f"engine ISA {engine_isa}, {os.cpu_count()} cores; "
        f"tfpconv {facts['tfpconv']}, ai-edge-litert {facts['ai_edge_litert']}; {conversion}.\n\n"
        + summary_table(reports)
        + ("\n\nTargets:\n\n" + "\n".join(targets) if targets else "")
    )
    markdown = args.out / f"{stem}.md"
    write_atomic(markdown, f"## Summary\n\n{summary}\n\n{markdown.read_text()}".encode())
    plot(reports, args.out / f"{stem}.png")
    print(f"\nwrote {args.out}/{stem}.{{json,md,png}} in {time.perf_counter() - start:.0f} s")
    print(summary)


def summary_table(reports: dict[Config, BenchReport]) -> str:
    lines = [
        "| model | connectivity | allocation | threads | XNNPACK ms | tfpconv ms | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, connectivity, allocation), report in reports.items():
        for r in report.results:
            lines.append(
                f"| {name} | {connectivity:.2f} | {allocation} | {r.threads} | "
                f"{r.xnnpack_ms:.2f} | {r.delegate_ms:.2f} | {r.speedup:.2f}x |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
