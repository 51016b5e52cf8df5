"""Timing interpreters side by side, runs interleaved in one process: load drift hits all alike."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfpconv.runtime.interpreter import Interpreter


def _random_inputs(interpreter: Any, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    inputs = []
    for detail in interpreter.get_input_details():
        shape = [max(int(d), 1) for d in detail["shape"]]
        inputs.append((detail["index"], rng.uniform(0, 1, shape).astype(detail["dtype"])))
    return inputs


def interleaved_latencies(
    interpreters: Sequence[Any], runs: int, warmup: int = 2
) -> list[np.ndarray]:
    """Milliseconds per ``invoke()`` of each interpreter, the runs interleaved."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for interpreter in interpreters:
        for index, value in _random_inputs(interpreter):
            interpreter.set_tensor(index, value)
        for _ in range(warmup):
            interpreter.invoke()
    times = np.zeros((len(interpreters), runs))
    for run in range(runs):
        for i, interpreter in enumerate(interpreters):
            start = time.perf_counter()
            interpreter.invoke()
            times[i, run] = (time.perf_counter() - start) * 1e3
    return list(times)


def outputs(interpreter: Any) -> list[np.ndarray]:
    """Copies of an interpreter's outputs after its last ``invoke()``."""
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def output_errors(expected: Any, actual: Any) -> tuple[float, float]:
    """The largest absolute and relative (to the largest expected value) differences between two
    interpreters' outputs."""
    diffs = [
        (np.max(np.abs(a - b)), np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
        for a, b in zip(outputs(expected), outputs(actual), strict=True)
    ]
    return float(max(d[0] for d in diffs)), float(max(d[1] for d in diffs))


def pair(
    model: bytes, threads: int, delegate_options: Mapping[str, Any] | None = None
) -> tuple[Any, Any]:
    """Plain TFLite and TFLite with the delegate (``delegate_options``: see ``load_delegate``)."""
    plain = Interpreter(model_content=model, num_threads=threads, use_delegate=False)
    fast = Interpreter(
        model_content=model, num_threads=threads, use_delegate=True, **(delegate_options or {})
    )
    plain.allocate_tensors()
    fast.allocate_tensors()
    return plain, fast


def compare(
    model: bytes, threads: int, runs: int, delegate_options: Mapping[str, Any] | None = None
) -> tuple[float, float, float, float, int, int]:
    plain, fast = pair(model, threads, delegate_options)
    plain_ms, fast_ms = interleaved_latencies([plain, fast], runs)
    return (
        float(np.median(plain_ms)),
        float(np.median(fast_ms)),
        *output_errors(plain, fast),
        len(fast.delegated_nodes()),
        fast.packed_weight_bytes(),
    )


def thread_scaling(
    model: bytes,
    threads: Sequence[int],
    runs: int,
    delegate_options: Mapping[str, Any] | None = None,
) -> dict[str, dict[int, float]]:
    """Median ms of XNNPACK and of the delegate at every thread count, all interleaved."""
    counts = sorted(set(threads))
    interpreters = [
        interpreter for count in counts for interpreter in pair(model, count, delegate_options)
    ]
    medians = [float(np.median(t)) for t in interleaved_latencies(interpreters, runs)]
    return {
        "xnnpack": dict(zip(counts, medians[0::2], strict=True)),
        "delegate": dict(zip(counts, medians[1::2], strict=True)),
    }
