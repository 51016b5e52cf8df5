"""Latency model validation: predicted vs measured end-to-end latency of random candidates.

For each model (VGG-16 at 32x32, ResNet-18 at 224x224 by default) the latency table is measured on
this machine (``tfpconv.runtime.latency_table``, cached in ``benchmarks/results/tables/``), then
random candidates are drawn (``latency_table.random_candidate``: a keep ratio per channel group
from {0.25, 0.5, 0.75, 1}, per 3x3 convolution dense or a connectivity from {0, 0.5, 0.72, 0.9}, 8
patterns, the first convolution dense or patterns at 0; another seed than the table's
calibration; the committed results predate the dense choice), built for
real (channel surgery + pattern projection), converted, and timed as deployed
(``tfpconv.Interpreter``, one thread, medians). Writes
``benchmarks/results/latency_model.{json,md}`` with every candidate and the median absolute error
(target: <= 10%).

    python3 benchmarks/latency_model.py                      # both models, 10 candidates each
    python3 benchmarks/latency_model.py --models vgg16_32 --candidates 12
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.progress import Progress  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.keras.candidates import build_candidate  # noqa: E402
from tfpconv.runtime import latency_table as lt  # noqa: E402
from tfpconv.runtime.machine import TableMismatchError  # noqa: E402
from tfpconv.tflite.conversion import convert_model  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402

MODELS = {
    "vgg16_32": lambda: tfpconv.models.vgg16((32, 32, 3), num_classes=10),
    "resnet18": lambda: tfpconv.models.resnet18((224, 224, 3)),
}
TARGET = 0.10


def table_for(name, model, table_dir: Path, say) -> lt.LatencyTable:
    path = table_dir / "latency_table.json"
    table = None
    if path.exists():
        try:
            table = lt.LatencyTable.load(path, threads=1)
        except TableMismatchError as err:
            say(f"not reusing {path}: {err}")
    if table is None or name not in table.overhead_ms:
        table = lt.measure_table(
            model,
            table=table,
            progress=lambda done, total, what: say(f"{name} table {done}/{total}: {what}"),
        )
        table_dir.mkdir(parents=True, exist_ok=True)
        table.save(path)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    results = {"machine": None, "models": {}}
    with Progress(transient=True) as bar:
        task = bar.add_task("latency model", total=None)

        def say(what: str) -> None:
            bar.update(task, description=what)
            bar.console.log(what)

        for name in args.models:
            keras.utils.set_random_seed(args.seed)
            model = MODELS[name]()
            start = time.perf_counter()
            table = table_for(name, model, args.out / "tables", say)
            table_seconds = time.perf_counter() - start
            results["machine"] = table.machine
            rng = np.random.default_rng(args.seed)
            rows = []
            for i in range(args.candidates):
                widths, connectivity = lt.random_candidate(model, rng)
                predicted = table.predict(model, widths, connectivity)
                data = convert_model(build_candidate(model, widths, connectivity))
                measured = lt.measured_latency(data)
                error = (predicted - measured) / measured
                say(
                    f"{name} candidate {i + 1}: predicted {predicted:.3f} ms, "
                    f"measured {measured:.3f} ms ({error:+.1%})"
                )
                rows.append(
                    {
                        "widths": widths,
                        "connectivity": connectivity,
                        "predicted_ms": predicted,
                        "measured_ms": measured,
                        "error": error,
                    }
                )
            errors = np.abs([r["error"] for r in rows])
            results["models"][name] = {
                "table_seconds": table_seconds,
                "overhead_ms": table.overhead_ms[model.name],
                "median_abs_error": float(np.median(errors)),
                "max_abs_error": float(np.max(errors)),
                "candidates": rows,
            }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "latency_model.json", (json.dumps(results, indent=1) + "\n").encode())
    write_atomic(args.out / "latency_model.md", markdown(results).encode())
    print(markdown(results))


def markdown(results) -> str:
    machine = results["machine"]
    lines = [
        "# Latency model: predicted vs measured",
        "",
        f"{machine['cpu']}, {machine['isa']}, {machine['threads']} thread(s), tfpconv "
        f"{machine['tfpconv']}, ai-edge-litert {machine['ai_edge_litert']}. Random candidates "
        "(keep ratio per channel group, connectivity per 3x3 convolution, 8 patterns), built, "
        "converted and timed as deployed (medians).",
        "",
        "| model | candidates | median abs error | max abs error | target | met | table time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        met = "yes" if r["median_abs_error"] <= TARGET else "**no**"
        lines.append(
            f"| {name} | {len(r['candidates'])} | {r['median_abs_error']:.1%} | "
            f"{r['max_abs_error']:.1%} | <= {TARGET:.0%} | {met} | {r['table_seconds']:.0f} s |"
        )
    for name, r in results["models"].items():
        lines += ["", f"## {name}", "", "| # | predicted | measured | error |", "|---|---|---|---|"]
        for i, c in enumerate(r["candidates"], start=1):
            predicted, measured = c["predicted_ms"], c["measured_ms"]
            lines.append(f"| {i} | {predicted:.3f} ms | {measured:.3f} ms | {c['error']:+.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
