"""Latency of a converted model: TFLite's default path (XNNPACK) vs the tfpconv delegate.

Both interpreters load the same .tflite and are timed interleaved in one process (run i of one,
then run i of the other), so drifting machine load hits both alike. Reports medians, the ratio,
agreement of the outputs, per-layer figures (each planned convolution re-built as a one-layer
model and timed the same way) and peak memory (each configuration in a fresh process).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfpconv.runtime.bench_report import BenchReport, LayerTiming, ThreadResult
from tfpconv.runtime.layer_models import single_conv_model
from tfpconv.runtime.memory import peak_memory_mb
from tfpconv.runtime.timing import compare, interleaved_latencies, pair, thread_scaling
from tfpconv.tflite.inspect import inspect_model
from tfpconv.tflite.model_file import TFLiteModel
from tfpconv.tflite.plan import read_plan


def per_layer(
    model_bytes: bytes,
    threads: int,
    runs: int,
    progress: Callable[[str], None] | None = None,
    delegate_options: Mapping[str, Any] | None = None,
) -> list[LayerTiming]:
    """Each planned convolution of the model timed alone, XNNPACK vs the delegate."""
    model = TFLiteModel.from_bytes(model_bytes)
    plan = read_plan(model_bytes)
    names = {
        (r.subgraph_index, r.operator_index): r.name for r in inspect_model(model_bytes).layers
    }
    timings = []
    for conv in plan.convs:
        name = names[(conv.subgraph_index, conv.operator_index)]
        if progress is not None:
            progress(name)
        single = single_conv_model(model, conv)
        plain, fast = pair(single, threads, delegate_options)
        plain_ms, fast_ms = interleaved_latencies([plain, fast], runs)
        timings.append(
            LayerTiming(
                name=name,
                input_shape=tuple(int(d) for d in plain.get_input_details()[0]["shape"]),
                output_shape=tuple(int(d) for d in plain.get_output_details()[0]["shape"]),
                weights=conv.weights,
                weights_kept=conv.weights_kept,
                xnnpack_ms=float(np.median(plain_ms)),
                delegate_ms=float(np.median(fast_ms)),
                claimed=bool(fast.delegated_nodes()),
            )
        )
    return timings


def bench(
    model_path: str | os.PathLike[str],
    threads: Sequence[int] = (1,),
    runs: int = 10,
    layers: bool = True,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
    delegate_options: Mapping[str, Any] | None = None,
) -> BenchReport:
    """Time a tfpconv-converted model with XNNPACK and with the delegate, side by side.

    Args:
      model_path: a .tflite file written by ``tfpconv.convert``.
      threads: thread counts to measure (for both paths).
      runs: timed runs per configuration (medians are reported; the interleaved thread-scaling
        loop, run when several thread counts are given, takes three times as many).
      layers: also time every planned convolution alone.
      memory: also measure peak memory of each path (fresh processes).
      progress: called with a short description before each step.
      delegate_options: options of the delegate's interpreters (``load_delegate``), e.g.
        ``{"isa": "avx2"}`` to time its AVX2 kernels on an AVX-512 CPU. Peak memory is measured
        without them.
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    plan = read_plan(path)  # errors name the file
    data = path.read_bytes()
    say = progress or (lambda _message: None)
    results = []
    for count in threads:
        say(f"{path.name}: end to end, {count} thread(s)")
        result = ThreadResult(count, *compare(data, count, runs, delegate_options))
        if layers:
            result.layers = per_layer(
                data,
                count,
                runs,
                lambda name, c=count: say(f"{path.name}: {name}, {c} thread(s)"),
                delegate_options,
            )
        if memory:
            say(f"{path.name}: peak memory, {count} thread(s)")
            result.xnnpack_peak_mb = peak_memory_mb(path, count, False)
            result.delegate_peak_mb = peak_memory_mb(path, count, True)
        results.append(result)
    scaling = {}
    if len(set(threads)) > 1:
        say(f"{path.name}: thread scaling, {len(set(threads))} thread counts interleaved")
        # Cheap next to the per-layer runs, and the ratio of two noisy medians wants more runs.
        scaling = thread_scaling(data, threads, 3 * runs, delegate_options)
    return BenchReport(
        model=path.name,
        planned_convs=len(plan.convs),
        weights=sum(c.weights for c in plan.convs),
        weights_kept=sum(c.weights_kept for c in plan.convs),
        results=results,
        scaling=scaling,
    )
