"""Convert-time tuning's whole-model check: the plan never makes the model slower end to end.

The per-layer tuning is exercised with real timings in tests/test_delegate.py; here the whole-model
step runs with fake timers, so the decisions it must take are known exactly.
"""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")
import tfpconv  # noqa: E402
from tfpconv.runtime import tuning  # noqa: E402
from tfpconv.tflite.model_file import TFLiteModel  # noqa: E402
from tfpconv.tflite.plan import METADATA_NAME, Tuning, read_plan  # noqa: E402


@pytest.fixture(scope="module")
def converted() -> bytes:
    model = tfpconv.models.small_vgg((16, 16, 3), widths=(8, 16), name="tiny")
    tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.5)
    return tfpconv.convert(model)


def _claimed_results(plan, gains):
    return [
        tuning.LayerTuning(conv.operator_index, 1.0 + gain, 1.0, 1.0, Tuning("avx2", "cpu"), 3)
        for conv, gain in zip(plan.convs, gains, strict=True)
    ]


class FakeTimer:
    """Plain TFLite at 10 ms; with the plan 12 ms until `fast_after` layers are left, then 8."""

    def __init__(self, fast_after: int | None):
        self.fast_after, self.calls, self.claims = fast_after, 0, []

    def __call__(self, data, threads, isa):
        plan = read_plan(data)
        self.claims.append([c.tuning_for("avx2").claim for c in plan.convs])
        dropped = self.claims[-1].count(False)
        self.calls += 1
        slow = self.fast_after is None or dropped < self.fast_after
        return 10.0, 12.0 if slow else 8.0


def _run(converted, gains, timer):
    model = TFLiteModel.from_bytes(converted)
    plan = read_plan(converted)
    results = _claimed_results(plan, gains)
    for conv, result in zip(plan.convs, results, strict=True):
        conv.tunings = [result.tuning]
    model.set_metadata(METADATA_NAME, plan.to_bytes())  # as tune_model leaves it
    lines = []
    data = tuning._never_slower(model, plan, results, 1, None, timer, lines.append)
    return read_plan(data), results, lines


def test_faster_model_keeps_every_claim(converted):
    plan, results, lines = _run(converted, [3.0, 1.0, 2.0, 0.5], FakeTimer(fast_after=0))
    assert all(c.tuning_for("avx2").claim for c in plan.convs)
    assert all(r.claimed for r in results) and "1.25x" in lines[-1]


def test_slower_model_leaves_the_least_gain_first(converted):
    timer = FakeTimer(fast_after=2)
    plan, results, lines = _run(converted, [3.0, 1.0, 2.0, 0.5], timer)
    # Gains 0.5 (4th conv), then 1.0 (2nd conv) go; the model is then faster and the rest stay.
    assert [c.tuning_for("avx2").claim for c in plan.convs] == [True, False, True, False]
    assert [r.claimed for r in results] == [True, False, True, False]
    assert timer.calls == 3
    assert sum("leaving operator" in line for line in lines) == 2


def test_model_never_faster_leaves_everything_to_tflite(converted):
    plan, results, _ = _run(converted, [3.0, 1.0, 2.0, 0.5], FakeTimer(fast_after=None))
    assert not any(c.tuning_for("avx2").claim for c in plan.convs)
    assert not any(r.claimed for r in results)
    # A declined layer's tuning says only that, for its instruction set.
    assert all((t.variant, t.params) == ("", {}) for c in plan.convs for t in c.tunings)
