"""Accuracy benchmark: a VGG-style CNN on the real Fashion-MNIST, dense vs PCONV pattern pruning.

Every variant trains from the same initial weights for the same number of epochs with the same
optimizer schedule; the pruned ones add ``tfpconv.callbacks.PatternPruning`` (8 patterns; by
default the callback's own schedule: ``PATTERN_PROJECTIONS_PER_PHASE`` (256) magnitude
projections spread over half the epochs, then masked fine-tuning, with the kernels to remove
split over the layers by ``connectivity_allocation="erdos_renyi"``). Writes a JSON file and a
markdown table.

    python3 benchmarks/accuracy.py             # the full run (about an hour on 2 idle cores)
    python3 benchmarks/accuracy.py --epochs 1 --train-size 2000 --widths 16 32 64   # a smoke run
    python3 benchmarks/accuracy.py --train-size 0   # all 60000 training images (about 4 hours)
    python3 benchmarks/accuracy.py --method admm   # ADMM with the callback's defaults
    python3 benchmarks/accuracy.py --update-every 30   # a projection every 30 steps

The variants can run as separate processes (on 2 cores, two single-threaded processes side by
side train faster than one two-threaded one), each adding its results to the same files::

    taskset -c 0 python3 benchmarks/accuracy.py --variants dense --merge &
    taskset -c 1 python3 benchmarks/accuracy.py --variants pconv-8p-c0.72 --merge; wait
    python3 benchmarks/accuracy.py --variants pconv-8p-c0.50 --merge
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.sparsity.allocation import ALLOCATIONS  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402

VARIANTS = (
    ("dense", None),
    ("pconv-8p-c0.50", 0.5),
    ("pconv-8p-c0.72", 0.72),
)
#: Options that only change the pruned variants: a dense result does not depend on them.
PRUNING_OPTIONS = frozenset(
    (
        "method",
        "update_every",
        "pruning_epochs",
        "rho",
        "rho_growth",
        "rho_max",
        "allocation",
        "filter_group",
    )
)


def train_variant(name, connectivity, data, args, initial_weights):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    model = tfpconv.models.small_vgg(widths=args.widths, bn_momentum=args.bn_momentum)
    model.set_weights(initial_weights)
    steps = int(np.ceil(len(x_train) / args.batch_size)) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = []
    if connectivity is not None:
        callbacks.append(
            tfpconv.callbacks.PatternPruning(
                num_patterns=8,
                connectivity=connectivity,
                method=args.method,
                update_every=args.update_every,
                rho=args.rho,
                rho_growth=args.rho_growth,
                rho_max=args.rho_max,
                pruning_epochs=args.pruning_epochs,
                connectivity_allocation=args.allocation,
                filter_group=args.filter_group,
            )
        )
    print(f"\n== {name}: {args.epochs} epochs on {len(x_train)} images", flush=True)
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        callbacks=callbacks,
        verbose=2,
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    report = tfpconv.summary(model, print_fn=print if connectivity is not None else None)
    return {
        "variant": name,
        "connectivity": connectivity,
        "train_images": len(x_train),
        "test_accuracy": float(accuracy),
        "weights_3x3_total": report.weights,
        "weights_3x3_kept": report.weights_kept,
        "compression_3x3": report.compression,
        "flops_3x3_kept_fraction": sum(s.flops_kept for s in report.layers)
        / sum(s.flops for s in report.layers),
        "train_seconds": seconds,
        "val_accuracy_per_epoch": [float(a) for a in history.history["val_accuracy"]],
    }


def _default_schedule() -> str:
    return f"default ({tfpconv.callbacks.PATTERN_PROJECTIONS_PER_PHASE} per phase)"


def markdown(results, config) -> str:
    dense = results[0]["test_accuracy"]
    pruning_epochs = config["pruning_epochs"]
    lines = [
        f"Fashion-MNIST ({results[0]['train_images']} training images, the 10000 test images), "
        f"small VGG (widths {config['widths']}, BatchNorm momentum {config['bn_momentum']}), "
        f"{config['epochs']} epochs, batch {config['batch_size']}, {len(results)} variants from "
        f"the same initial weights; pruning with method={config['method']!r}, "
        f"update_every={config['update_every'] or _default_schedule()}, pruning_epochs="
        f"{pruning_epochs if pruning_epochs is not None else 'half'}, "
        f"connectivity allocation {config['allocation']!r}"
        + f", filter_group={config.get('filter_group', 1)}"
        + ".",
        "",
        "| variant | 3x3 weights kept | compression | 3x3 FLOPs kept | test accuracy "
        "| vs dense (points) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        # A dense result is all FLOPs by definition (results from before this field lack it).
        flops = r.get("flops_3x3_kept_fraction", 1.0 if r["connectivity"] is None else None)
        lines.append(
            f"| {r['variant']} | {r['weights_3x3_kept']}/{r['weights_3x3_total']} | "
            f"{r['compression_3x3']:.2f}x | {'n/a' if flops is None else f'{flops:.1%}'} | "
            f"{100 * r['test_accuracy']:.2f}% | "
            f"{100 * (r['test_accuracy'] - dense):+.2f} |"
        )
    return "\n".join(lines) + "\n"


def merge_results(previous: dict, results: list, config: dict, path: Path) -> list:
    """``results`` added to those of an earlier run with the same settings (read from ``path``),
    replacing the ones of the same variant, in the order of ``VARIANTS``."""

    def prunes(entries):
        return any(r["connectivity"] is not None for r in entries)

    old = previous["config"]
    ignored = {"variants"}
    if not (prunes(previous["results"]) and prunes(results)):
        ignored |= PRUNING_OPTIONS
    different = sorted(
        k for k in set(config) | set(old) if k not in ignored and config.get(k) != old.get(k)
    )
    if different:
        changes = ", ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in different)
        raise SystemExit(
            f"--merge: {path} holds results of other settings ({changes}); rerun with those "
            f"settings, or without --merge to replace the file"
        )
    by_name = {r["variant"]: r for r in previous["results"]}
    by_name.update({r["variant"]: r for r in results})
    return [by_name[name] for name, _ in VARIANTS if name in by_name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--train-size", type=int, default=15000, help="train on the first N images (0: all 60000)"
    )
    parser.add_argument("--widths", type=int, nargs=3, default=(64, 128, 256))
    parser.add_argument("--bn-momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("admm", "magnitude"), default="magnitude")
    parser.add_argument(
        "--update-every",
        type=int,
        default=None,
        help="steps between ADMM updates / magnitude projections (default: the callback's, "
        f"{tfpconv.callbacks.PATTERN_PROJECTIONS_PER_PHASE} spread over the pruning phase)",
    )
    parser.add_argument(
        "--pruning-epochs",
        type=int,
        default=None,
        help="epochs before the masks are fixed (default: half of --epochs)",
    )
    parser.add_argument(
        "--allocation",
        choices=ALLOCATIONS,
        default="erdos_renyi",
        help="how the connectivity target is split over the layers",
    )
    parser.add_argument(
        "--filter-group",
        type=lambda text: text if text == "auto" else int(text),
        default="auto",
        help="filters that share patterns and kept input channels: PatternPruning's "
        "filter_group, an integer or auto (the default)",
    )
    parser.add_argument("--rho", type=float, default=1.0, help="initial ADMM penalty")
    parser.add_argument(
        "--rho-growth", type=float, default=None, help="rho factor per update (callback default)"
    )
    parser.add_argument(
        "--rho-max", type=float, default=None, help="largest rho (default: the callback's)"
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[name for name, _ in VARIANTS],
        choices=[name for name, _ in VARIANTS],
        help="variants to train, in this order (the first one is the reference)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add the results to those already in --out (same settings; same variants replaced)",
    )
    args = parser.parse_args()
    config = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in vars(args).items()
        if k not in ("out", "merge")
    }
    json_path = args.out / "accuracy.json"
    connectivities = dict(VARIANTS)
    if args.merge and json_path.exists():  # fail now, not after an hour of training
        planned = [{"variant": n, "connectivity": connectivities[n]} for n in args.variants]
        merge_results(json.loads(json_path.read_text()), planned, config, json_path)

    (x_train, y_train), test = tfpconv.datasets.fashion_mnist()
    if args.train_size:
        x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    keras.utils.set_random_seed(args.seed)
    initial_weights = tfpconv.models.small_vgg(
        widths=args.widths, bn_momentum=args.bn_momentum
    ).get_weights()

    results = [
        train_variant(name, connectivities[name], ((x_train, y_train), test), args, initial_weights)
        for name in args.variants
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / ".accuracy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # merging processes read and write the files in turn
        if args.merge and json_path.exists():
            previous = json.loads(json_path.read_text())
            merged = merge_results(previous, results, config, json_path)
            if all(r["connectivity"] is None for r in results):  # the table states them
                config.update({k: v for k, v in previous["config"].items() if k in PRUNING_OPTIONS})
            results = merged
            config["variants"] = [r["variant"] for r in results]
        write_results(args.out, results, config)


def write_results(out: Path, results: list, config: dict) -> None:
    """``accuracy.json`` and ``accuracy.md`` in ``out``, each replaced atomically."""
    table = markdown(results, config)
    write_benchmark_files(out, "accuracy", results, config, table)
    print("\n" + table)


def write_benchmark_files(out: Path, name: str, results: list, config: dict, table: str) -> None:
    """``<name>.json`` (settings, machine, results) and ``<name>.md`` (the table) in ``out``,
    each replaced atomically; shared by the accuracy benchmarks."""
    payload = {
        "benchmark": name,
        "dataset": "fashion-mnist (Debian dataset-fashion-mnist)",
        "config": config,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    write_atomic(out / f"{name}.json", (json.dumps(payload, indent=2) + "\n").encode())
    write_atomic(out / f"{name}.md", table.encode())


if __name__ == "__main__":
    main()
