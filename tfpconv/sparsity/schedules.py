"""Connectivity ramps: the fraction of kernels removed as a function of the training step."""

from __future__ import annotations

import math
from collections.abc import Callable

from tfpconv.sparsity.patterns import check_connectivity


def cubic_ramp(final: float, begin_step: int, end_step: int) -> Callable[[int], float]:
    """Zhu & Gupta's gradual schedule: 0 at ``begin_step`` rising to ``final`` at ``end_step``."""
    check_connectivity(final)
    span = max(end_step - begin_step, 1)

    def ramp(step: int) -> float:
        progress = min(max((step - begin_step) / span, 0.0), 1.0)
        return final * (1.0 - (1.0 - progress) ** 3)

    return ramp


def half_cosine(start: float, progress: float) -> float:
    """``start`` at ``progress`` 0 falling along a half cosine to 0 at ``progress`` 1 (clipped):
    the learning rate of the callbacks' hard phase."""
    progress = min(max(progress, 0.0), 1.0)
    return start * 0.5 * (1.0 + math.cos(math.pi * progress))
