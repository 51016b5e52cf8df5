"""Connectivity ramps: the fraction of kernels removed as a function of the training step."""

from __future__ import annotations

import math
from collections.abc import Callable

from tfpconv.sparsity.patterns import check_connectivity


def cubic_ramp(final: float, begin_step: int, end_step: int) -> Callable[[int], float]:
    """Zhu & Gupta's gradual schedule: 0 at ``begin_step`` rising to ``final`` at ``end_step``."""
    check_connectivity(final)

    def ramp(step: int) -> float:
        return final * cubic_progress(step, begin_step, end_step)

    return ramp


def cubic_progress(step: int, begin_step: int, end_step: int) -> float:
    """The gradual schedule's shape: 0 at ``begin_step``, rising fast, flattening to 1 at
    ``end_step`` (``1 - (1 - t)^3``); every target of the training callbacks follows it."""
    progress = min(max((step - begin_step) / max(end_step - begin_step, 1), 0.0), 1.0)
    return 1.0 - (1.0 - progress) ** 3


def half_cosine(start: float, progress: float) -> float:
    """``start`` at ``progress`` 0 falling along a half cosine to 0 at ``progress`` 1 (clipped):
    the learning rate of the callbacks' hard phase."""
    progress = min(max(progress, 0.0), 1.0)
    return start * 0.5 * (1.0 + math.cos(math.pi * progress))
