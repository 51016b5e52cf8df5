"""Speed of semi-structured activation sparsity: masked models against the same models unmasked.

Two targets (one thread, every ratio from runs interleaved in one process):

1. a pattern-pruned model (8 patterns, connectivity 0.72) with activation sparsity 0.3 against the
   same pattern-pruned model without masks, both on the delegate;
2. a dense ResNet-18 224 with activation sparsity 0.2 on the delegate (its dense path) against
   XNNPACK on the same model without masks.

Masks come from :func:`tfpconv.activation.apply_random_masks` (one random score map, what training
freezes when it tries one; the speed does not depend on which units are masked, only on how many).
Weights are random (speed does not depend on them either). Per layer, each masked convolution is
re-built as a one-layer model (conv + its mask) and timed the same way: XNNPACK unmasked, the
delegate unmasked and masked.

    python3 benchmarks/activation_speed.py                       # both targets, ~15 min
    python3 benchmarks/activation_speed.py --cases vgg16_224_patterns --no-layers
    python3 benchmarks/activation_speed.py --isa avx2   # the delegate's AVX2 kernels on this CPU

Results: benchmarks/results/activation_speed_<isa>_<cpu>.{json,md}, ``<isa>`` being the
delegate's instruction set, ``<cpu>`` the CPU (e.g. ``amd-epyc-zen5``). With ``--isa`` below
what the CPU supports, XNNPACK still runs its best kernels: the pattern cases' ratios (delegate
against delegate) stand for a CPU of that ISA, the dense case's ratio is then a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpconv  # noqa: E402
from tfpconv.runtime.interpreter import Interpreter  # noqa: E402
from tfpconv.runtime.latency_table import machine_facts  # noqa: E402
from tfpconv.runtime.machine import cpu_slug  # noqa: E402
from tfpconv.runtime.timing import interleaved_latencies, output_errors  # noqa: E402
from tfpconv.tflite.files import write_atomic  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One comparison: a model, pattern-pruned or dense, masked at ``sparsity``."""

    name: str
    model: str
    patterns: bool
    sparsity: float
    target: float  # the ratio the issue asks for


CASES = {
    "vgg16_224_patterns": Case("vgg16_224_patterns", "vgg16_224", True, 0.3, 1.3),
    "resnet18_224_patterns": Case("resnet18_224_patterns", "resnet18_224", True, 0.3, 1.3),
    "resnet18_224_dense": Case("resnet18_224_dense", "resnet18_224", False, 0.2, 1.15),
}
MODELS = {
    "vgg16_224": lambda: tfpconv.models.vgg16((224, 224, 3)),
    "resnet18_224": lambda: tfpconv.models.resnet18((224, 224, 3)),
}


def _is_3x3(layer) -> bool:
    return (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) == (3, 3)
        and layer.__class__.__name__ == "Conv2D"
    )


def build(case: Case) -> tuple[bytes, bytes, keras.Model]:
    """The unmasked and the masked .tflite of a case, and the masked Keras model."""
    keras.utils.set_random_seed(0)
    model = MODELS[case.model]()
    if case.patterns:
        tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.72)
    unmasked = tfpconv.convert(model)
    masked_model = tfpconv.activation.sparsify(model, sparsity=case.sparsity, layers=_is_3x3)
    tfpconv.activation.apply_random_masks(masked_model, seed=0)
    return unmasked, tfpconv.convert(masked_model), masked_model


#: Options for every delegate this benchmark loads (``isa`` from the command line).
DELEGATE_OPTIONS: dict[str, str] = {}


def _interpreter(model: bytes, delegate: bool) -> Interpreter:
    options = DELEGATE_OPTIONS if delegate else {}
    interpreter = Interpreter(model_content=model, num_threads=1, use_delegate=delegate, **options)
    interpreter.allocate_tensors()
    return interpreter


def time_models(unmasked: bytes, masked: bytes, runs: int) -> dict:
    """Medians of XNNPACK and the delegate on both models, and the masked outputs' agreement."""
    interpreters = {
        "xnnpack_unmasked": _interpreter(unmasked, False),
        "delegate_unmasked": _interpreter(unmasked, True),
        "xnnpack_masked": _interpreter(masked, False),
        "delegate_masked": _interpreter(masked, True),
    }
    times = interleaved_latencies(list(interpreters.values()), runs)
    result = {name: float(np.median(t)) for name, t in zip(interpreters, times, strict=True)}
    result["max_relative_error"] = output_errors(
        interpreters["xnnpack_masked"], interpreters["delegate_masked"]
    )[1]
    result["delegated_nodes_masked"] = len(interpreters["delegate_masked"].delegated_nodes())
    return result


def _single_layer(conv, mask_layer) -> tuple[bytes, bytes]:
    """One conv (+ its mask) as its own model, unmasked and masked."""
    shape = tuple(int(d) for d in conv.input.shape[1:])
    inputs = keras.Input(shape, batch_size=1)
    clone = conv.__class__.from_config(conv.get_config())
    outputs = clone(inputs)
    clone.set_weights(conv.get_weights())
    unmasked = tfpconv.convert(keras.Model(inputs, outputs))
    mask = mask_layer.__class__.from_config(mask_layer.get_config())
    masked_out = mask(outputs)
    mask.set_mask(mask_layer.mask)
    return unmasked, tfpconv.convert(keras.Model(inputs, masked_out))


def masked_pixels(mask_layer) -> float:
    """The fraction of a layer's output pixels its mask zeroes (units at the edges are smaller)."""
    return float(1.0 - np.mean(mask_layer.mask))


def per_layer(masked_model: keras.Model, runs: int) -> list[dict]:
    """Each masked convolution alone: XNNPACK unmasked, the delegate unmasked and masked."""
    convs = {layer.name: layer for layer in masked_model.layers}
    rows = []
    for mask_layer in tfpconv.activation.mask_layers(masked_model):
        conv = convs[mask_layer.name.removesuffix("_mask")]
        unmasked, masked = _single_layer(conv, mask_layer)
        interpreters = [
            _interpreter(unmasked, False),
            _interpreter(unmasked, True),
            _interpreter(masked, True),
        ]
        xnn, plain, skip = (float(np.median(t)) for t in interleaved_latencies(interpreters, runs))
        rows.append(
            {
                "layer": conv.name,
                "output": list(int(d) for d in conv.output.shape[1:]),
                "masked_fraction": mask_layer.masked_fraction,
                "masked_pixels": masked_pixels(mask_layer),
                "xnnpack_ms": xnn,
                "delegate_unmasked_ms": plain,
                "delegate_masked_ms": skip,
                "claimed": bool(interpreters[2].delegated_nodes()),
            }
        )
        print(f"  {conv.name}: {xnn:.3f} / {plain:.3f} / {skip:.3f} ms", flush=True)
    return rows


def markdown(results: list[dict], machine: dict) -> str:
    lines = [
        f"CPU: {machine.get('cpu', '?')} ({machine.get('microarchitecture') or '?'}, "
        f"{machine.get('cpu_isa', '?')}), delegate ISA "
        f"{machine.get('isa', '?')}, 1 thread. Medians of "
        "interleaved runs in one process. Ratio: the case's baseline (pattern cases: the "
        "delegate on the unmasked model; dense case: XNNPACK on the unmasked model) over the "
        "delegate on the masked model.",
        "",
        "| case | sparsity | XNNPACK unmasked | delegate unmasked | delegate masked | ratio | "
        "target | met | max rel. error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['sparsity']} | {r['xnnpack_unmasked']:.2f} ms | "
            f"{r['delegate_unmasked']:.2f} ms | {r['delegate_masked']:.2f} ms | "
            f"{r['ratio']:.2f}x | {r['target']}x | {'yes' if r['ratio'] >= r['target'] else 'NO'} "
            f"| {r['max_relative_error']:.1e} |"
        )
    for r in results:
        if not r.get("layers"):
            continue
        lines += [
            "",
            f"Per layer, {r['case']} (ms; the conv and its mask alone):",
            "",
            "| layer | output | masked units | masked pixels | XNNPACK | delegate unmasked | "
            "delegate masked | masked speed-up |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in r["layers"]:
            lines.append(
                f"| {row['layer']} | {'x'.join(map(str, row['output']))} | "
                f"{row['masked_fraction']:.0%} | {row['masked_pixels']:.0%} | "
                f"{row['xnnpack_ms']:.3f} | "
                f"{row['delegate_unmasked_ms']:.3f} | {row['delegate_masked_ms']:.3f} | "
                f"{row['delegate_unmasked_ms'] / row['delegate_masked_ms']:.2f}x"
                + ("" if row["claimed"] else " (declined)")
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--layer-runs", type=int, default=15)
    parser.add_argument("--no-layers", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--isa",
        choices=["avx512", "avx2"],
        help="the delegate's kernels (default: the best this CPU runs)",
    )
    args = parser.parse_args()
    machine = machine_facts(1)
    machine["cpu_isa"] = machine["isa"]
    if args.isa:
        DELEGATE_OPTIONS["isa"] = machine["isa"] = args.isa
    results = []
    with tempfile.TemporaryDirectory(prefix="tfpconv-activation-"):
        for name in args.cases:
            case = CASES[name]
            print(f"== {name}: converting", flush=True)
            unmasked, masked, masked_model = build(case)
            print(f"== {name}: timing {args.runs} interleaved runs", flush=True)
            timing = time_models(unmasked, masked, args.runs)
            baseline = timing["delegate_unmasked" if case.patterns else "xnnpack_unmasked"]
            result = {
                "case": name,
                "sparsity": case.sparsity,
                "target": case.target,
                **timing,
                "ratio": baseline / timing["delegate_masked"],
            }
            print(json.dumps(result), flush=True)
            if not args.no_layers:
                result["layers"] = per_layer(masked_model, args.layer_runs)
            results.append(result)
    cpu_tag = cpu_slug(machine["cpu"], machine["microarchitecture"])
    stem = f"activation_speed_{machine['isa']}_{cpu_tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, machine)
    write_atomic(
        args.out / f"{stem}.json",
        json.dumps({"machine": machine, "results": results}, indent=1).encode(),
    )
    write_atomic(args.out / f"{stem}.md", table.encode())
    print(table)


if __name__ == "__main__":
    main()
