"""Accuracy on a short fine-tuning budget: prune a trained model in as many epochs as it trained.

The protocol of a user who adds the callback to an existing training run: the narrow VGG-style
CNN (widths 32/64/128, two 3x3 convolutions per stage), with or without BatchNorm, trains dense
for ``--epochs`` epochs on the first 30000 Fashion-MNIST training images (Adam, learning rate
1e-3, batch 128). From that checkpoint (weights and optimizer state) every variant trains
``--epochs`` more epochs:

- ``dense``: nothing added (the reference: the same network trained dense for twice as long);
- ``dense-cosine``: dense, with the learning rate of the default callback's hard phase (held for
  the first half, then a half cosine to 0), to show what that schedule alone is worth;
- ``default``: ``PatternPruning(num_patterns=8, connectivity=0.72)`` and nothing else set (that
  is ``method="magnitude"``);
- ``admm``: the same with ``method="admm"``, everything else default;
- ``admm-undamped``, ``admm-decay0.9``, ``admm-decay0.5``: ADMM with ``dual_decay=1`` (plain ADMM:
  the scaled dual never fades, ``method="admm"`` until 2026-12-08), ``0.9`` or ``0.5`` in every
  layer, where the default ``"auto"`` fades it by 0.9 in layers with filter groups and not at all
  in the others (not run unless named);
- ablations, one default reverted each (not run unless named in ``--variants``):
  ``uniform`` (``connectivity_allocation="uniform"``), ``first-patterns``
  (``first_layer="patterns"``), ``no-cosine`` (``hard_phase_lr=None``), ``no-restore``
  (``restore_norms=False``: projected filters keep the norm the projection left them);
  ``prune-1`` / ``prune-3`` (``pruning_epochs=1`` / ``3`` instead of 2); ``update-8``,
  ``update-4``, ``update-2``, ``update-1`` (``update_every=N``: a projection every N steps, 59 to
  470 per pruning phase, where the default spreads 256: every 2 steps here); ``admm-rho10`` /
  ``admm-rho100`` (ADMM with rho growing from 1 to 10 / 100 over the ramp instead of a constant
  1), ``admm-32-rho10`` / ``admm-32-rho100`` (the same with 32 rounds, every 15 steps: the ADMM
  schedule before 2026-12-06, then without the restart from Z);
- filter groups (not run unless named): ``group-1``, ``group-2``, ``group-4`` (``filter_group=1``
  / ``2`` / ``4`` in every layer: that many consecutive filters share their patterns and kept
  input channels, for the delegate's shared-load kernels; the default ``"auto"`` groups 4 where a
  BatchNorm follows, so ``default`` is ``group-1`` on the plain network and ``group-4`` on the
  BatchNorm one)::

    python3 benchmarks/accuracy_short.py --variants group-1 group-2 group-4 --merge

- activation sparsity (not run unless named): ``act-0.1``, ``act-0.2``, ``act-0.3``: the dense
  checkpoint with ``tfpconv.activation.sparsify(model, sparsity=s)`` (a mask after every 3x3
  convolution; the copy is compiled with a fresh Adam 1e-3) and
  ``ActivationSparsity(sample=<the first 512 training images>)`` (4 candidate score maps per
  update), nothing else::

    python3 benchmarks/accuracy_short.py --networks plain --variants act-0.1 act-0.2 act-0.3 --merge

- weight unification (not run unless named): ``unified`` (``default`` plus ``unify=0.5``: half
  of the kept 3x3 kernels share one magnitude) and ``head-unified`` (for the ``head`` network, a
  2048-2048 Dense head before the classifier: ``WeightUnification(unify=0.5, prune=0.25)`` on it
  and nothing else)::

    python3 benchmarks/accuracy_short.py --networks plain --variants default unified --merge
    python3 benchmarks/accuracy_short.py --networks head --variants dense head-unified --merge

Every variant runs for each seed (own initial weights and data order); the table reports the mean
and spread (sample standard deviation) of the test accuracy over the seeds, against dense.

    python3 benchmarks/accuracy_short.py                      # all of it (about 70 min on 2 cores)
    python3 benchmarks/accuracy_short.py --seeds 0 --networks plain --variants dense default

Networks, seeds and variants can run as separate processes (two single-threaded processes side by
side train faster than one two-threaded one); each adds its results to the same files::

    taskset -c 0 python3 benchmarks/accuracy_short.py --networks plain --merge &
    taskset -c 1 python3 benchmarks/accuracy_short.py --networks batchnorm --merge; wait
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from accuracy import write_benchmark_files  # noqa: E402 (benchmarks/, the script's directory)

import tfpconv  # noqa: E402
from tfpconv.runtime.machine import cpu_microarchitecture, cpu_model, cpu_slug  # noqa: E402
from tfpconv.sparsity.schedules import half_cosine  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402

#: Per network: BatchNorm or not, and the widths of a Dense head before the classifier.
NETWORKS = {"plain": (False, ()), "batchnorm": (True, ()), "head": (False, (2048, 2048))}
#: ``PatternPruning`` arguments per variant (None: no such callback). Only these are set: the rest
#: is default.
VARIANTS = {
    "dense": None,
    "dense-cosine": None,
    "default": {},
    "admm": {"method": "admm"},
    "admm-undamped": {"method": "admm", "dual_decay": 1.0},
    "admm-decay0.9": {"method": "admm", "dual_decay": 0.9},
    "admm-decay0.5": {"method": "admm", "dual_decay": 0.5},
    "uniform": {"connectivity_allocation": "uniform"},
    "first-patterns": {"first_layer": "patterns"},
    "no-cosine": {"hard_phase_lr": None},
    "no-restore": {"restore_norms": False},
    "prune-1": {"pruning_epochs": 1},
    "prune-3": {"pruning_epochs": 3},
    "update-8": {"update_every": 8},
    "update-4": {"update_every": 4},
    "update-2": {"update_every": 2},
    "update-1": {"update_every": 1},
    "admm-rho10": {"method": "admm", "rho_max": 10.0},
    "admm-rho100": {"method": "admm", "rho_max": 100.0},
    "admm-32-rho10": {"method": "admm", "rho_max": 10.0, "update_every": 15},
    "admm-32-rho100": {"method": "admm", "rho_max": 100.0, "update_every": 15},
    "unified": {"unify": 0.5},
    "group-1": {"filter_group": 1},
    "group-2": {"filter_group": 2},
    "group-4": {"filter_group": 4},
    "head-unified": None,
    "act-0.1": None,
    "act-0.2": None,
    "act-0.3": None,
}
#: Activation sparsity of the variants that add activation masks.
ACTIVATION_VARIANTS = {"act-0.1": 0.1, "act-0.2": 0.2, "act-0.3": 0.3}
#: Training images the activation masks' candidate score maps are scored on.
ACTIVATION_SAMPLE = 512
#: ``WeightUnification`` arguments of the variants that add it (the head network's fc layers).
UNIFICATION_VARIANTS = {"head-unified": {"unify": 0.5, "prune": 0.25}}
DEFAULT_VARIANTS = ("dense", "dense-cosine", "default", "admm")
NUM_PATTERNS, CONNECTIVITY = 8, 0.72


class SecondHalfCosine(keras.callbacks.Callback):
    """Holds the learning rate for the first half of ``fit``, then lowers it along a half cosine
    to 0, step by step: the schedule ``PatternPruning`` gives its hard phase by default."""

    def on_train_begin(self, logs=None):
        self.start = float(self.model.optimizer.learning_rate)
        self.total = self.params["epochs"] * self.params["steps"]
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        half = math.ceil(self.params["epochs"] / 2) * self.params["steps"]
        progress = min(max(self.step - half, 0) / max(self.total - half, 1), 1.0)
        self.model.optimizer.learning_rate = half_cosine(self.start, progress)


def compiled_model(network: str, widths, seed: int) -> keras.Model:
    batch_norm, head = NETWORKS[network]
    keras.utils.set_random_seed(seed)
    model = tfpconv.models.small_vgg(widths=widths, batch_norm=batch_norm, head_widths=head)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def pretrained(network: str, seed: int, data, args, workdir: Path) -> Path:
    """The dense checkpoint every variant of ``(network, seed)`` starts from, saved once."""
    widths = "-".join(map(str, args.widths))
    path = (
        workdir
        / f"pretrained-{network}-{widths}-seed{seed}-{args.train_size}-{args.epochs}ep.keras"
    )
    if not path.exists():
        (x, y), _ = data
        model = compiled_model(network, args.widths, seed)
        print(f"\n== {network}, seed {seed}: dense training, {args.epochs} epochs", flush=True)
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
        partial = path.with_suffix(".partial.keras")
        model.save(partial)
        os.replace(partial, path)  # a process that stops mid-save leaves no checkpoint behind
    return path


def run_variant(network: str, seed: int, variant: str, checkpoint: Path, data, args) -> dict:
    (x, y), (x_test, y_test) = data
    keras.utils.set_random_seed(seed + 1000)  # the same data order for every variant of a seed
    model = keras.saving.load_model(checkpoint)
    options = VARIANTS[variant]
    callbacks = [SecondHalfCosine()] if variant == "dense-cosine" else []
    if options is not None:
        callbacks.append(
            tfpconv.callbacks.PatternPruning(
                num_patterns=NUM_PATTERNS, connectivity=CONNECTIVITY, **options
            )
        )
    if variant in UNIFICATION_VARIANTS:
        callbacks.append(tfpconv.callbacks.WeightUnification(**UNIFICATION_VARIANTS[variant]))
    if variant in ACTIVATION_VARIANTS:
        model = tfpconv.activation.sparsify(model, sparsity=ACTIVATION_VARIANTS[variant])
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        sample = (x[:ACTIVATION_SAMPLE], y[:ACTIVATION_SAMPLE])
        callbacks.append(tfpconv.callbacks.ActivationSparsity(sample=sample))
    print(f"\n== {network}, seed {seed}, {variant}: {args.epochs} more epochs", flush=True)
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, callbacks=callbacks, verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    report = tfpconv.summary(model, print_fn=None)
    return {
        "network": network,
        "seed": seed,
        "variant": variant,
        "test_accuracy": float(accuracy),
        "compression_3x3": report.compression,
        "kernels_unified": sum(layer.kernels_unified for layer in report.layers),
        "unified_dense_bytes": sum(layer.dense_bytes for layer in report.unified),
        "unified_packed_bytes": sum(layer.packed_bytes for layer in report.unified),
        "train_seconds": seconds,
        "activation_masked": _masked_fraction(model),
        "machine": cpu_slug(cpu_model(), cpu_microarchitecture()),
    }


def _masked_fraction(model: keras.Model) -> float:
    """The zero fraction of the masked layers' outputs (0 without masks)."""
    masks = [layer.mask for layer in tfpconv.activation.mask_layers(model)]
    total = sum(m.size for m in masks)
    return sum(m.size - float(m.sum()) for m in masks) / total if total else 0.0


def markdown(results: list[dict], config: dict) -> str:
    lines = [
        f"Fashion-MNIST ({config['train_size']} training images, the 10000 test images), small "
        f"VGG (widths {config['widths']}), Adam 1e-3, batch {config['batch_size']}: "
        f"{config['epochs']} epochs dense, then {config['epochs']} more per variant; pruned: "
        f"`PatternPruning(num_patterns={NUM_PATTERNS}, connectivity={CONNECTIVITY})` with "
        f"defaults except the method shown (`no-restore`: `restore_norms=False`, the defaults "
        "before 2026-12-05). Mean ± sample standard deviation over the seeds. `head`: the same "
        "network without BatchNorm and a 2048-2048 Dense head; `unified`: half of the kept 3x3 "
        "kernels unified; `head-unified`: the head unified 0.5 / pruned 0.25 "
        "(weight bytes as the delegate packs them); `act-s`: activation masks at sparsity s after "
        "every 3x3 convolution (`tfpconv.activation.sparsify` + `ActivationSparsity`); `group-g`: "
        '`filter_group=g` (`default` has `filter_group="auto"`: 4 where a BatchNorm follows, so '
        "every pruned layer of the batchnorm network; its `group-1` rows were measured as the "
        'defaults before that, 2026-12-05). `admm`: ADMM as `method="admm"` runs it since '
        "2026-12-08 (each round restarts the weights from Z; constant rho 1; 256 rounds per "
        "phase, every 2 steps here; the scaled dual U fades by 0.9 per round in layers with "
        "filter groups, every pruned layer of the batchnorm network, and not at all in the "
        'plain one\'s, whose `admm` rows are therefore those of `method="admm"` since '
        "2026-12-06); `admm-undamped`, `admm-decay0.9`, `admm-decay0.5`: `dual_decay` 1 (plain "
        "ADMM), 0.9, 0.5 in every layer; `admm-rho10` / "
        "`admm-rho100`: undamped, rho growing to 10 / 100 over "
        "the ramp; `admm-32-*`: 32 rounds (every 15 steps). Since 2026-12-06 `PatternPruning` "
        "spreads 256 magnitude projections over the pruning phase (every 2 steps here: the plain "
        "network's `default` is `update-2`, to the hundredth); the `no-restore`, `group-*`, "
        "`prune-1` and `prune-3` rows were measured with the 32 before (every 15 steps); "
        "`update-N` projects every N steps. `vs dense` / `vs default`: the mean and spread of "
        "the differences to the dense / default run of the same seed on the same machine. The "
        "batchnorm network's runs differ between machines (the plain one's do not): rows with a "
        "machine were measured on it (`amd-epyc-zen4`: `lscpu` family 25 model 17, 2026-12-08); "
        "the batchnorm rows without one on an Intel Xeon (`lscpu` family 6 model 207, "
        "2026-12-06), their `admm-undamped` rows and seeds 3 and 4 on another (model 167), "
        "which repeated the dense and default runs of seeds 0 and 1 to the hundredth.",
        "",
        "| network | machine | variant | seeds | 3x3 compression | unified | activations masked "
        "| test accuracy | vs dense (points) | vs default (points) | per seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for network in NETWORKS:
        on_network = [r for r in results if r["network"] == network]
        # Runs pair with the dense and default runs of their own seed and machine: rows without
        # a machine (before 2026-12-08) are the machines the note above names.
        for machine in dict.fromkeys(r.get("machine", "") for r in on_network):
            rows = [r for r in on_network if r.get("machine", "") == machine]
            lines += _variant_rows(network, machine, rows)
    return "\n".join(lines) + "\n"


def _variant_rows(network: str, machine: str, rows: list[dict]) -> list[str]:
    """One table row per variant of one network's runs on one machine."""
    by_seed = {
        variant: {r["seed"]: r["test_accuracy"] for r in rows if r["variant"] == variant}
        for variant in ("dense", "default")
    }
    lines = []
    for variant in VARIANTS:
        runs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seed"])
        if not runs:
            continue
        accuracies = [100 * r["test_accuracy"] for r in runs]
        paired = {
            against: [100 * (r["test_accuracy"] - of[r["seed"]]) for r in runs if r["seed"] in of]
            for against, of in by_seed.items()
        }
        lines.append(
            f"| {network} | {machine or '-'} | {variant} | {len(runs)} | "
            f"{statistics.mean(r['compression_3x3'] for r in runs):.2f}x | "
            f"{_unified(runs[0])} | {_masked(runs[0])} | {_mean_spread(accuracies)}% | "
            + " | ".join(
                _mean_spread(paired[a]) if paired[a] and _compares(variant, a) else "n/a"
                for a in ("dense", "default")
            )
            + " | "
            + ", ".join(f"{a:.2f}" for a in accuracies)
            + " |"
        )
    return lines


def _compares(variant: str, against: str) -> bool:
    """Whether a variant's row shows its difference to ``against``: every variant against dense,
    the pattern-pruned ones (``PatternPruning`` options) against the defaults."""
    if against == "dense":
        return variant != "dense"
    return variant != "default" and VARIANTS[variant] is not None


def _unified(run: dict) -> str:
    """What a run unified: 3x3 kernels, and Dense bytes packed vs dense."""
    parts = []
    if run.get("kernels_unified"):
        parts.append(f"{run['kernels_unified']} 3x3 kernels")
    if run.get("unified_dense_bytes"):
        ratio = run["unified_dense_bytes"] / max(run["unified_packed_bytes"], 1)
        parts.append(f"head {ratio:.2f}x fewer bytes")
    return ", ".join(parts) or "-"


def _masked(run: dict) -> str:
    masked = run.get("activation_masked", 0.0)
    return f"{masked:.1%}" if masked else "-"


def _mean_spread(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.2f} ± {spread:.2f}".lstrip("+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="dense epochs, then as many more")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=30000)
    parser.add_argument("--widths", type=int, nargs=3, default=(32, 64, 128))
    parser.add_argument("--seeds", type=int, nargs="+", default=(0, 1, 2))
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(DEFAULT_VARIANTS)
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        help="keep the dense checkpoints here, to share them between processes and reruns "
        "(default: a temporary directory)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add the results to those in --out (same settings; a network/seed/variant rerun "
        "on the same machine replaces its result)",
    )
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the table from the JSON file in --out"
    )
    args = parser.parse_args()
    config = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_size": args.train_size,
        "widths": list(args.widths),
    }
    json_path = args.out / "accuracy_short.json"
    if args.table_only:
        previous = json.loads(json_path.read_text())
        table = markdown(previous["results"], previous["config"])
        write_atomic(args.out / "accuracy_short.md", table.encode())
        print(table)
        return
    if args.merge and json_path.exists():  # fail now, not after an hour of training
        _check_same_config(json.loads(json_path.read_text()), config, json_path)

    (x, y), test = tfpconv.datasets.fashion_mnist()
    data = ((x[: args.train_size], y[: args.train_size]), test)
    results = []
    with tempfile.TemporaryDirectory(prefix="tfpconv-accuracy-") as workdir:
        checkpoints = args.checkpoints or Path(workdir)
        checkpoints.mkdir(parents=True, exist_ok=True)
        for network in args.networks:
            for seed in args.seeds:
                checkpoint = pretrained(network, seed, data, args, checkpoints)
                for variant in args.variants:
                    results.append(run_variant(network, seed, variant, checkpoint, data, args))
                    print(json.dumps(results[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / ".accuracy_short.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # merging processes read and write the files in turn
        if args.merge and json_path.exists():
            previous = json.loads(json_path.read_text())
            _check_same_config(previous, config, json_path)
            key = lambda r: (r["network"], r["seed"], r["variant"], r.get("machine", ""))  # noqa: E731
            merged = {key(r): r for r in previous["results"]}
            merged.update({key(r): r for r in results})
            results = list(merged.values())
        table = markdown(results, config)
        write_benchmark_files(args.out, "accuracy_short", results, config, table)
    print("\n" + table)


def _check_same_config(previous: dict, config: dict, path: Path) -> None:
    if previous["config"] != config:
        raise SystemExit(
            f"--merge: {path} holds results of other settings ({previous['config']}, now "
            f"{config}); rerun with those settings, or without --merge to replace the file"
        )


if __name__ == "__main__":
    main()
