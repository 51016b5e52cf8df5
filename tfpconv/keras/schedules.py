"""Connectivity schedules as the callbacks take them: a constant, a callable, a tfmot schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfpconv.sparsity.patterns import check_connectivity

#: A fraction in [0, 1), ``step -> fraction``, or a tensorflow-model-optimization schedule such as
#: ``tfmot.sparsity.keras.PolynomialDecay`` (called with the step, returns ``(prune?, sparsity)``).
Connectivity = float | Callable[[int], Any]


class ConnectivitySchedule:
    """Evaluates a :data:`Connectivity` at a training step, always as a checked float."""

    def __init__(self, connectivity: Connectivity) -> None:
        if callable(connectivity):
            self._fn = connectivity
            self.constant: float | None = None
        else:
            check_connectivity(connectivity)
            self._fn = None
            self.constant = float(connectivity)
        self.description = (
            f"{self.constant:g}" if self.constant is not None else type(connectivity).__name__
        )

    def __call__(self, step: int) -> float:
        if self._fn is None:
            return self.constant
        value = self._fn(_step_argument(self._fn, step))
        if isinstance(value, (tuple, list)):  # tfmot schedules return (should_prune, sparsity)
            value = value[-1]
        value = float(np.asarray(value))
        try:
            check_connectivity(value)
        except ValueError as error:
            raise ValueError(
                f"connectivity schedule {self.description} at step {step}: {error}"
            ) from None
        return value


def _step_argument(fn: Any, step: int) -> Any:
    # tfmot schedules do tensor arithmetic on the step, so they get a tf int64 tensor.
    if type(fn).__module__.startswith("tensorflow_model_optimization"):
        return tf.constant(step, dtype=tf.int64)
    return step
