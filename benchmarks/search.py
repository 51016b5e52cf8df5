"""JCW search vs uniform channel-only and pattern-only pruning at three latency budgets.

Fashion-MNIST (the first ``--images`` training images; the test set only for the final scores), a
VGG-style network (widths ``--widths``, two 3x3 convolutions per stage, BatchNorm), trained dense
for ``--epochs`` epochs. The latency table is measured here with the delegate; the search runs
``--trials`` candidates (short fine-tunes scored on a held-out validation split). Budgets are
fractions of the dense model's measured latency. Per budget three models are fine-tuned with the
same budget (``--finetune-epochs``, once per ``--seeds`` seed: mean and spread reported) and scored
on the test set, their converted ``.tflite`` timed as deployed (tfpconv.Interpreter, one thread):

- searched: the budget's finalist (``tfpconv.search.finalist``): of the ``--finalists`` candidates
  with the best search estimate within the budget (measured latency; the front and the uniform
  points the search started from) and the best-estimated uniform point of each kind within it,
  each timed again and kept only if that timing fits too, the one with the best validation
  accuracy after the same fine-tune as below on the training split;
- channel pruning only: the widest uniform keep ratio (0.1 grid) within the budget, every
  convolution dense (TFLite's own kernels);
- patterns + connectivity only: the lowest uniform connectivity (0.1 grid) within the budget.

At the end every row's final model (its first seed's) and the dense model are timed again side by
side, their runs interleaved in one loop (``--final-runs`` each): the report judges "within budget"
on those timings, against the budget's fraction of the dense model's, so a slower or faster spell
of a shared machine cannot move one row across its budget and not the others.

Writes ``benchmarks/results/search_<cpu>.{json,md,png}`` (``<cpu>`` e.g. ``amd-epyc-zen5``).

    python3 benchmarks/search.py                 # about 30 minutes on 2 cores
    python3 benchmarks/search.py --trials 80 --images 30000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpconv  # noqa: E402
import tfpconv.search as search  # noqa: E402
from tfpconv.runtime import latency_table as lt  # noqa: E402
from tfpconv.runtime.machine import cpu_model, cpu_slug  # noqa: E402
from tfpconv.tflite.conversion import convert_model  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def say(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def compiled(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def finetune(model, candidate, x, y, x_test, y_test, args, seed):
    """The candidate fine-tuned as a user would: materialize, fit with the pruning callback.
    Returns the test accuracy, the converted model's latency and the converted model."""
    keras.utils.set_random_seed(seed)
    small, callbacks = search.materialize(model, candidate, verbose=0)
    compiled(small, args.finetune_lr)
    small.fit(x, y, batch_size=128, epochs=args.finetune_epochs, callbacks=callbacks, verbose=0)
    accuracy = float(small.evaluate(x_test, y_test, verbose=0)[1])
    converted = convert_model(small)
    return accuracy, lt.measured_latency(converted), converted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--widths", type=int, nargs=3, default=[32, 64, 128])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--seeds", type=int, default=3, help="fine-tunes per model")
    parser.add_argument("--finalists", type=int, default=3, help="candidates ranked per budget")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.35, 0.2])
    parser.add_argument(
        "--final-runs", type=int, default=2000, help="interleaved runs per final model"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.time()
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = tfpconv.datasets.fashion_mnist()
    x, y = x[: args.images], y[: args.images]

    model = tfpconv.models.small_vgg(widths=tuple(args.widths), name="fmnist_vgg")
    say(f"training the dense model for {args.epochs} epochs on {len(x)} images")
    compiled(model, 1e-3).fit(x, y, batch_size=128, epochs=args.epochs, verbose=0)
    dense_accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    dense_tflite = convert_model(model)
    dense_ms = lt.measured_latency(dense_tflite)
    say(f"dense: {100 * dense_accuracy:.2f}% test, {dense_ms:.3f} ms")

    say("measuring the latency table")
    table = lt.measure_table(model)
    budgets_ms = [f * dense_ms for f in args.budgets]
    estimator = search.AccuracyEstimator(model, x, y, finetune_steps=args.finetune_steps)
    space = search.SearchSpace.of(model)
    storage = args.out / "search.journal"
    storage.unlink(missing_ok=True)
    search_started = time.time()
    front = search.search(
        model, x, y, table, args.trials, anchors_ms=budgets_ms, storage=storage,
        population_size=args.population, estimator=estimator, space=space,
        progress=lambda done, total: say(f"search {done}/{total}"),
    )  # fmt: skip
    search_seconds = time.time() - search_started
    storage.unlink(missing_ok=True)
    say(f"search: {len(front.entries)} front candidates in {search_seconds:.0f} s")

    def uniform_latency(candidate):
        # the slower of two timings, as search.finalist re-times its picks: one timing at the
        # budget's edge fits by luck as often as not
        converted = convert_model(estimator.build(candidate))
        return max(lt.measured_latency(converted), lt.measured_latency(converted))

    rows, finals = [], []
    for fraction, budget in zip(args.budgets, budgets_ms, strict=True):
        picks = {}
        try:
            picks["searched"] = search.finalist(
                front, estimator, budget, top=args.finalists, epochs=args.finetune_epochs,
                progress=lambda line, f=fraction: say(f"budget {f:g}: finalist {line}"),
            ).candidate  # fmt: skip
        except ValueError as err:
            say(f"budget {budget:.3f} ms: {err}")
        for ratio in np.arange(1.0, 0.25, -0.1):
            candidate = space.uniform(width=round(float(ratio), 1), connectivity=search.DENSE)
            if uniform_latency(candidate) <= budget:
                picks["channel pruning only"] = candidate
                break
        for connectivity in np.arange(0.0, 0.95, 0.1):
            candidate = space.uniform(connectivity=round(float(connectivity), 1))
            if uniform_latency(candidate) <= budget:
                picks["patterns + connectivity only"] = candidate
                break
        for method, candidate in picks.items():
            runs = [
                finetune(model, candidate, x, y, x_test, y_test, args, seed)
                for seed in range(args.seeds)
            ]
            accuracies = [a for a, _, _ in runs]
            ms = float(np.median([m for _, m, _ in runs]))
            finals.append(runs[0][2])
            predicted = table.predict(model, candidate.widths, candidate.connectivity)
            rows.append(
                {
                    "budget_fraction": fraction, "budget_ms": budget, "method": method,
                    "test_accuracy": float(np.mean(accuracies)),
                    "test_accuracy_std": float(np.std(accuracies)),
                    "test_accuracies": accuracies, "measured_ms": ms, "predicted_ms": predicted,
                    "widths": candidate.widths, "connectivity": candidate.connectivity,
                }
            )  # fmt: skip
            say(
                f"budget {fraction:g}: {method}: {100 * np.mean(accuracies):.2f}% "
                f"(+-{100 * np.std(accuracies):.2f}), {ms:.3f} ms measured, "
                f"{predicted:.3f} predicted"
            )

    # The final models (each row's first seed) and the dense one timed again side by side, runs
    # interleaved: timed one by one minutes apart, a sub-millisecond model moved by more than the
    # gaps between the methods, so only these timings compare the rows with each other and with
    # their budgets.
    say(f"timing the {len(finals)} final models and the dense one side by side")
    side_by_side = lt.measured_latencies([dense_tflite, *finals], runs=args.final_runs)
    dense_side_ms = side_by_side[0]
    for row, ms in zip(rows, side_by_side[1:], strict=True):
        row["side_by_side_ms"] = ms
        row["side_by_side_budget_ms"] = row["budget_fraction"] * dense_side_ms

    result = {
        "machine": {**table.machine, "platform": platform.platform(), "cpu_model": cpu_model()},
        "settings": vars(args) | {"out": str(args.out)},
        "dense": {
            "test_accuracy": dense_accuracy,
            "measured_ms": dense_ms,
            "side_by_side_ms": dense_side_ms,
        },
        "search": {
            "candidates": args.trials,
            "workers": 1,
            "seconds": search_seconds,
            "front": json.loads(front.to_json()),
        },  # fmt: skip
        "rows": rows,
        "total_seconds": time.time() - started,
    }
    microarchitecture = table.machine.get("microarchitecture", "")
    stem = f"search_{cpu_slug(table.machine['cpu'], microarchitecture)}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / f"{stem}.json", (json.dumps(result, indent=1) + "\n").encode())
    front.plot(args.out / f"{stem}.png", title="JCW search, Fashion-MNIST VGG (validation)")
    lines = [
        "# JCW search vs uniform baselines (Fashion-MNIST)",
        "",
        f"CPU: {table.machine['cpu']} ({microarchitecture or 'micro-architecture unknown'}, "
        f"{table.machine['isa']}), 1 thread. Dense: "
        f"{100 * dense_accuracy:.2f}% test, {dense_ms:.3f} ms. Search: {args.trials} candidates, "
        f"1 worker, {search_seconds:.0f} s. Fine-tune per model: {args.finetune_epochs} epochs, "
        f"{args.seeds} seeds (test accuracy: mean +- std). Measured ms: median of the seeds' "
        f"models, each timed after its fine-tune; side by side: the first seed's model timed again "
        f"with every other row's and the dense model ({dense_side_ms:.3f} ms there), runs "
        f"interleaved in one loop ({args.final_runs} each) -- within budget is judged on these, "
        f"against the fraction of that dense timing.",
        "",
        "| budget | method | test accuracy | measured ms | side by side ms (budget) | predicted ms "
        "| within budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        within = "yes" if row["side_by_side_ms"] <= row["side_by_side_budget_ms"] else "no"
        lines.append(
            f"| {row['budget_fraction']:g} x dense ({row['budget_ms']:.3f} ms) | {row['method']} "
            f"| {100 * row['test_accuracy']:.2f}% +- {100 * row['test_accuracy_std']:.2f} | "
            f"{row['measured_ms']:.3f} | {row['side_by_side_ms']:.3f} "
            f"({row['side_by_side_budget_ms']:.3f}) | {row['predicted_ms']:.3f} | {within} |"
        )
    lines += ["", "## Front (validation accuracy after the short fine-tune)", "", front.markdown()]
    write_atomic(args.out / f"{stem}.md", ("\n".join(lines) + "\n").encode())
    say(f"wrote {args.out}/{stem}.{{json,md,png}} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
