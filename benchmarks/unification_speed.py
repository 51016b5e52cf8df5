"""Weight unification speed: VGG-16's classic fully connected head from compressed weights.

VGG-16 224 with the 4096-4096 head (fc1 25088 -> 4096, fc2 4096 -> 4096, predictions 4096 ->
1000; random weights), the head unified 0.5 / pruned 0.25 in one shot (``tfpconv.unify_weights``),
converted with ``tfpconv.convert`` and timed at batch 1 with the delegate and with TFLite's own
path (XNNPACK), the runs interleaved in this process (medians):

* per layer and for the whole head (single-layer / head-only models with the same weights);
* the whole model: 8 patterns + connectivity 0.72 in the 3x3 convolutions, with the unified head
  and with a dense head (the patterns-only conversion), each against XNNPACK on the same file.

Writes ``unification_speed_<isa>_<cpu>.json`` and ``.md`` (``<cpu>`` e.g. ``amd-epyc-zen5``: a head
bound by memory bandwidth depends on the machine as much as on the instruction set; inside: CPU,
instruction set, the targets met or not,
the weight bytes the delegate keeps next to the dense bytes).

    python3 benchmarks/unification_speed.py                 # about 15 minutes
    python3 benchmarks/unification_speed.py --runs 5 --skip-model
    python3 benchmarks/unification_speed.py --work /var/tmp/u --prepare-only  # convert now,
    python3 benchmarks/unification_speed.py --work /var/tmp/u                 # time when quiet
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.runtime.latency_table import machine_facts  # noqa: E402
from tfpconv.runtime.machine import cpu_slug  # noqa: E402
from tfpconv.runtime.timing import interleaved_latencies, pair  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402

HEAD = ("fc1", "fc2", "predictions")
#: Targets of the weight-unification issue: (what, minimum ratio vs XNNPACK).
HEAD_TARGET = 3.0

console = Console()


def vgg16_with_head() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.applications.VGG16(weights=None, include_top=True, input_shape=(224, 224, 3))


def head_model(model: keras.Model, names: tuple[str, ...]) -> keras.Model:
    """A model of just the named Dense layers of ``model``, in order, with their weights."""
    first = model.get_layer(names[0])
    inputs = keras.Input((first.kernel.shape[0],), batch_size=1)
    x = inputs
    for name in names:
        layer = model.get_layer(name)
        copy = keras.layers.Dense(layer.units, activation=layer.activation, name=name)
        x = copy(x)
        copy.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name="_".join(names))


def time_pair(path: Path, runs: int) -> dict:
    data = path.read_bytes()
    plain, fast = pair(data, threads=1)
    plain_ms, fast_ms = interleaved_latencies([plain, fast], runs)
    a = plain.get_tensor(plain.get_output_details()[0]["index"])
    b = fast.get_tensor(fast.get_output_details()[0]["index"])
    relative = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30))
    return {
        "xnnpack_ms": float(np.median(plain_ms)),
        "tfpconv_ms": float(np.median(fast_ms)),
        "speedup": float(np.median(plain_ms) / np.median(fast_ms)),
        "delegated_nodes": len(fast.delegated_nodes()),
        "delegate_weight_bytes": fast.packed_weight_bytes(),
        "max_relative_difference": relative,
    }


#: Weights of VGG-16's head layers: (inputs, outputs).
HEAD_SHAPES = {"fc1": (25088, 4096), "fc2": (4096, 4096), "predictions": (4096, 1000)}
MODEL_LABELS = ("patterns + unified head", "patterns only")


def dense_bytes(names: tuple[str, ...]) -> int:
    return sum(int(np.prod(HEAD_SHAPES[n])) * 4 for n in names)


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """Unify, prune and convert every model timed (files in ``work`` are reused)."""
    labels = ["+".join(names) for names in [(n,) for n in HEAD] + [HEAD]]
    paths = {label: work / f"{label}_b{args.block_size}.tflite" for label in labels}
    paths.update(
        {
            label: work / f"vgg16_{label.replace(' ', '_')}_b{args.block_size}.tflite"
            for label in MODEL_LABELS
        }
    )
    if all(path.exists() for path in paths.values()) and (work / "head_summary.json").exists():
        return paths
    start = time.time()
    model = vgg16_with_head()
    unified = vgg16_with_head()
    report = tfpconv.unify_weights(
        unified, args.unify, args.prune, layers=list(HEAD), block_size=args.block_size
    )
    write_atomic(
        work / "head_summary.json", json.dumps([vars(s) for s in report.unified], indent=2).encode()
    )
    console.print(f"unified the head in {time.time() - start:.0f} s")
    for names in [(n,) for n in HEAD] + [HEAD]:
        tfpconv.convert(head_model(unified, names), output_path=paths["+".join(names)])
    if not args.skip_model:
        for label, net in zip(MODEL_LABELS, (unified, model), strict=True):
            tfpconv.prune_patterns(net, num_patterns=8, connectivity=0.72)
            tfpconv.convert(net, output_path=paths[label])
            console.print(f"converted VGG-16 224, {label}")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--unify", type=float, default=0.5)
    parser.add_argument("--prune", type=float, default=0.25)
    parser.add_argument("--skip-model", action="store_true", help="only the head")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the converted models here and reuse them (default: a temporary directory)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="convert the models into --work and stop (time them in a later, quiet run)",
    )
    args = parser.parse_args()
    machine = machine_facts(1)
    console.print(f"machine: {machine}")
    results: dict = {"machine": machine, "settings": vars(args).copy(), "layers": {}}
    results["settings"]["out"] = str(args.out)
    results["settings"]["work"] = None
    work = args.work or Path(tempfile.mkdtemp(prefix="tfpconv_unification_"))
    work.mkdir(parents=True, exist_ok=True)
    paths = prepare(args, work)
    if args.prepare_only:
        console.print(f"converted models in {work}")
        return
    results["head_summary"] = json.loads((work / "head_summary.json").read_text())

    for names in [(name,) for name in HEAD] + [HEAD]:
        label = "+".join(names) if len(names) > 1 else names[0]
        path = paths[label]
        result = time_pair(path, args.runs)
        result["dense_weight_bytes"] = dense_bytes(names)
        results["layers"][label] = result
        console.print(
            f"{label}: XNNPACK {result['xnnpack_ms']:.2f} ms, tfpconv {result['tfpconv_ms']:.2f} "
            f"ms, {result['speedup']:.2f}x; delegate keeps {result['delegate_weight_bytes']} of "
            f"{result['dense_weight_bytes']} weight bytes"
        )

    if not args.skip_model:
        for label in MODEL_LABELS:
            result = time_pair(paths[label], max(args.runs // 2, 5))
            results.setdefault("model", {})[label] = result
            console.print(
                f"VGG-16 224 {label}: XNNPACK {result['xnnpack_ms']:.1f} ms, tfpconv "
                f"{result['tfpconv_ms']:.1f} ms, {result['speedup']:.2f}x"
            )

    cpu_tag = cpu_slug(machine["cpu"], machine.get("microarchitecture", ""))
    stem = f"unification_speed_{machine['isa']}_{cpu_tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / f"{stem}.json", (json.dumps(results, indent=2) + "\n").encode())
    write_atomic(args.out / f"{stem}.md", markdown(results).encode())
    console.print(f"wrote {args.out}/{stem}.{{json,md}}")


def markdown(results: dict) -> str:
    machine, settings = results["machine"], results["settings"]
    microarchitecture = machine.get("microarchitecture") or "micro-architecture unknown"
    lines = [
        "# Weight unification: VGG-16's fully connected head from compressed weights",
        "",
        f"Machine: {machine['cpu']} ({microarchitecture}), engine ISA {machine['isa']}, 1 thread, "
        "batch 1; tfpconv "
        f"{machine['tfpconv']}, ai-edge-litert {machine['ai_edge_litert']}. Head unified "
        f"{settings['unify']} / pruned {settings['prune']} in blocks of {settings['block_size']}; "
        f"medians of {settings['runs']} interleaved runs "
        "(`python3 benchmarks/unification_speed.py`).",
        "",
        "| layers | XNNPACK ms | tfpconv ms | speedup | target | dense weight MB | "
        "delegate keeps MB | max rel. diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results["layers"].items():
        verdict = "met" if r["speedup"] >= HEAD_TARGET else "NOT met"
        lines.append(
            f"| {label} | {r['xnnpack_ms']:.2f} | {r['tfpconv_ms']:.2f} | {r['speedup']:.2f}x | "
            f">= {HEAD_TARGET:.0f}x: {verdict} | {r['dense_weight_bytes'] / 1e6:.1f} | "
            f"{r['delegate_weight_bytes'] / 1e6:.1f} | {r['max_relative_difference']:.1e} |"
        )
    if "model" in results:
        lines += [
            "",
            "Whole VGG-16 224 (8 patterns, connectivity 0.72 in the 3x3 convolutions), each "
            "conversion against XNNPACK on the same file:",
            "",
            "| conversion | XNNPACK ms | tfpconv ms | speedup | delegate keeps MB |",
            "|---|---|---|---|---|",
        ]
        for label, r in results["model"].items():
            lines.append(
                f"| {label} | {r['xnnpack_ms']:.1f} | {r['tfpconv_ms']:.1f} | "
                f"{r['speedup']:.2f}x | {r['delegate_weight_bytes'] / 1e6:.1f} |"
            )
        with_head = results["model"]["patterns + unified head"]["speedup"]
        without = results["model"]["patterns only"]["speedup"]
        verdict = "met" if with_head > without else "NOT met"
        lines += [
            "",
            f"Target: the unified head beats XNNPACK by more than the patterns-only conversion: "
            f"{with_head:.2f}x vs {without:.2f}x, {verdict}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
