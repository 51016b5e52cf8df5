"""Convert-time auto-tuning: ``tfpconv.convert(model, tune=True)``.

Every planned convolution is re-built as a one-layer model and timed on this machine with each of
the engine's candidate parameter sets (kernel variant, output- and input-channel tiling) and with
TFLite's own kernel (XNNPACK), each candidate interleaved run by run with XNNPACK so that drifting
machine load hits both alike. The fastest candidate becomes the layer's
:class:`~tfpconv.tflite.plan.Tuning` for this instruction set (variant by name, tile sizes, the CPU
model); when XNNPACK beats every candidate, a tuning with ``claim=False`` tells the delegate to
leave the layer to TFLite on this instruction set (other instruction sets keep their defaults).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfpconv.runtime.delegate import tuning_candidates
from tfpconv.runtime.interpreter import Interpreter
from tfpconv.runtime.layer_models import single_conv_model
from tfpconv.runtime.machine import cpu_model
from tfpconv.runtime.timing import interleaved_latencies
from tfpconv.tflite.model_file import TFLiteModel, schema, tensor_shape
from tfpconv.tflite.plan import METADATA_NAME, PatternConvPlan, Plan, Tuning, read_plan

__all__ = ["LayerTuning", "tune_model"]

#: A candidate must beat XNNPACK by this factor to be claimed (measurement noise margin).
CLAIM_MARGIN = 1.02


@dataclass
class LayerTuning:
    """What tuning measured for one planned convolution (times: medians, milliseconds)."""

    operator_index: int
    xnnpack_ms: float
    default_ms: float
    best_ms: float
    tuning: Tuning
    candidates: int
    timings: list[tuple[Tuning, float]] = field(default_factory=list)

    @property
    def claimed(self) -> bool:
        return self.tuning.claim


def _conv_geometry(
    model: TFLiteModel, conv: PatternConvPlan
) -> tuple[tuple[int, int, int], tuple, str]:
    op = model.model.subgraphs[conv.subgraph_index].operators[conv.operator_index]
    options = op.builtinOptions
    shape = tensor_shape(model.tensor(conv.subgraph_index, int(op.inputs[0])))
    padding = "same" if options.padding == schema.Padding.SAME else "valid"
    return (shape[1], shape[2], shape[3]), (options.strideH, options.strideW), padding


def _with_tuning(single: bytes, tuning: Tuning) -> bytes:
    model = TFLiteModel.from_bytes(single)
    plan = read_plan(single)
    plan.convs[0].tunings = [tuning]
    model.set_metadata(METADATA_NAME, plan.to_bytes())
    return model.to_bytes()


def _delegated(model: bytes, threads: int, isa: str | None) -> Any:
    options = {} if isa is None else {"isa": isa}
    interpreter = Interpreter(model_content=model, num_threads=threads, **options)
    interpreter.allocate_tensors()
    return interpreter


def _time_against_xnnpack(
    plain: Any, model: bytes, threads: int, isa: str | None, runs: int
) -> tuple[float, float, bool]:
    """(XNNPACK ms, delegate ms, delegated?) of one candidate, interleaved."""
    fast = _delegated(model, threads, isa)
    plain_ms, fast_ms = interleaved_latencies([plain, fast], runs, warmup=1)
    return float(np.median(plain_ms)), float(np.median(fast_ms)), bool(fast.delegated_nodes())


def _runs_for(milliseconds: float, budget_ms: float, min_runs: int = 3, max_runs: int = 25) -> int:
    return int(np.clip(budget_ms / max(milliseconds, 1e-3), min_runs, max_runs))


def tune_layer(
    model: TFLiteModel,
    conv: PatternConvPlan,
    threads: int = 1,
    budget_ms: float = 150.0,
    isa: str | None = None,
    finalists: int = 3,
) -> LayerTuning:
    """Times the candidates of one planned convolution; see the module docstring.

    A first round times every candidate (the engine's defaults among them) against XNNPACK; the
    ``finalists`` best of it are then timed again, all together and interleaved with XNNPACK for
    twice as many runs, so that one lucky or unlucky round decides nothing.
    """
    input_shape, strides, padding = _conv_geometry(model, conv)
    variants = tuning_candidates(input_shape, conv.out_channels, strides, padding, isa)
    isa_name = variants[0].isa if variants else (isa or "scalar")
    # The engine's defaults are a candidate like the others, so tuning never picks worse. Every
    # candidate claims the layer, even where the delegate would decline it by itself.
    candidates = [Tuning(isa=isa_name, cpu=cpu_model()), *variants]
    single = single_conv_model(model, conv)
    plain = Interpreter(model_content=single, num_threads=threads, use_delegate=False)
    plain.allocate_tensors()

    models = [_with_tuning(single, candidate) for candidate in candidates]
    xnn_ms, default_ms, _ = _time_against_xnnpack(plain, models[0], threads, isa, 3)
    runs = _runs_for(max(xnn_ms, default_ms), budget_ms)
    first_ms: dict[int, float] = {}  # candidate position -> ms, where the engine took it
    ratios: dict[int, float] = {}
    for position, candidate_model in enumerate(models):
        xnn, ms, delegated = _time_against_xnnpack(plain, candidate_model, threads, isa, runs)
        if delegated:  # else the engine refused it: never choose it
            first_ms[position], ratios[position] = ms, ms / xnn
    timings = [(candidates[i], ms) for i, ms in first_ms.items()]
    if not ratios:
        return LayerTuning(
            conv.operator_index, xnn_ms, default_ms, default_ms, candidates[0], 0, []
        )

    best_first = sorted(ratios, key=ratios.__getitem__)[:finalists]
    rivals = [_delegated(models[position], threads, isa) for position in best_first]
    times = interleaved_latencies([plain, *rivals], 2 * runs, warmup=1)
    xnn_ms = float(np.median(times[0]))
    final_ms = [float(np.median(t)) for t in times[1:]]
    winner = int(np.argmin(final_ms))
    best_ms = final_ms[winner]
    best = candidates[best_first[winner]]
    default_ms = first_ms.get(0, default_ms)
    chosen = best if best_ms * CLAIM_MARGIN < xnn_ms else Tuning(best.isa, best.cpu, claim=False)
    return LayerTuning(
        conv.operator_index, xnn_ms, default_ms, best_ms, chosen, len(candidates), timings
    )


def tune_model(
    data: bytes,
    threads: int = 1,
    budget_ms: float = 150.0,
    isa: str | None = None,
    progress: Callable[[str], None] | None = None,
    whole_model_timer: WholeModelTimer | None = None,
) -> tuple[bytes, list[LayerTuning]]:
    """Tunes every planned convolution of a converted model; returns the re-planned bytes.

    Each layer is tuned alone first; then the whole model is timed against plain TFLite, and
    claimed layers are left to TFLite, least gain first, until the model with the plan is faster
    (or no layer is claimed): the plan never makes the model slower as measured here.

    Args:
      data: a .tflite model written by ``tfpconv.convert``.
      threads: threads to tune for (the delegate's ``num_threads`` at run time).
      budget_ms: about how long each candidate is timed.
      isa: instruction set to tune (None: the best this CPU supports).
      progress: called with a line per layer as it is tuned.
      whole_model_timer: how the whole model is timed (default :func:`whole_model_ms`).
    """
    whole_model_timer = whole_model_timer or whole_model_ms
    model = TFLiteModel.from_bytes(data)
    plan: Plan = read_plan(data)
    results = []
    for position, conv in enumerate(plan.convs, start=1):
        start = time.perf_counter()
        result = tune_layer(model, conv, threads=threads, budget_ms=budget_ms, isa=isa)
        # A decision for this instruction set replaces an older one; others are kept.
        conv.tunings = [t for t in conv.tunings if t.isa != result.tuning.isa] + [result.tuning]
        results.append(result)
        if progress is not None:
            verdict = (
                f"{result.best_ms:.3f} ms with {result.tuning.variant or 'default'} "
                f"{result.tuning.params}"
                if result.claimed
                else "left to TFLite"
            )
            progress(
                f"tuned conv {position}/{len(plan.convs)} (operator {conv.operator_index}): "
                f"XNNPACK {result.xnnpack_ms:.3f} ms, default {result.default_ms:.3f} ms, "
                f"{verdict} [{result.candidates} candidates, {time.perf_counter() - start:.1f} s]"
            )
    model.set_metadata(METADATA_NAME, plan.to_bytes())
    data = _never_slower(model, plan, results, threads, isa, whole_model_timer, progress)
    return data, results


#: Times a whole model: ``(data, threads, isa) -> (plain TFLite ms, with the delegate ms)``.
WholeModelTimer = Callable[[bytes, int, "str | None"], tuple[float, float]]


def whole_model_ms(data: bytes, threads: int, isa: str | None) -> tuple[float, float]:
    """Median milliseconds of the model on plain TFLite and with the delegate, interleaved."""
    plain = Interpreter(model_content=data, num_threads=threads, use_delegate=False)
    plain.allocate_tensors()
    fast = _delegated(data, threads, isa)
    probe = interleaved_latencies([plain, fast], 2, warmup=1)
    runs = _runs_for(float(np.median(probe[0]) + np.median(probe[1])), 3000.0, 5, 300)
    plain_ms, fast_ms = interleaved_latencies([plain, fast], runs, warmup=1)
    return float(np.median(plain_ms)), float(np.median(fast_ms))


def _never_slower(
    model: TFLiteModel,
    plan: Plan,
    results: list[LayerTuning],
    threads: int,
    isa: str | None,
    timer: WholeModelTimer,
    progress: Callable[[str], None] | None,
) -> bytes:
    """The whole model with the tuned plan must beat plain TFLite: partition boundaries, layout
    changes and the split of XNNPACK's graph cost time that no single layer shows. While it does
    not, the claimed layer that gained least on its own is left to TFLite, and the model is timed
    again; in the end every layer may be left to TFLite (the plain model's speed)."""
    say = progress or (lambda _line: None)
    by_gain = sorted(
        (r for r in results if r.claimed),
        key=lambda r: (r.xnnpack_ms - r.best_ms, r.operator_index),
    )
    convs = {conv.operator_index: conv for conv in plan.convs}
    while True:
        data = model.to_bytes()
        plain_ms, ms = timer(data, threads, isa)
        say(
            f"whole model: XNNPACK {plain_ms:.3f} ms, with the plan {ms:.3f} ms "
            f"({plain_ms / max(ms, 1e-9):.2f}x), {len(by_gain)} layer(s) on the delegate"
        )
        if not by_gain or ms * CLAIM_MARGIN < plain_ms:
            return data
        result = by_gain.pop(0)
        result.tuning = Tuning(result.tuning.isa, result.tuning.cpu, claim=False)
        conv = convs[result.operator_index]
        conv.tunings = [t for t in conv.tunings if t.isa != result.tuning.isa] + [result.tuning]
        model.set_metadata(METADATA_NAME, plan.to_bytes())
        say(f"leaving operator {result.operator_index} to TFLite: the whole model is not faster")
