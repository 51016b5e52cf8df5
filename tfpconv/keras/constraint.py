"""What the sparsity-training machinery (:mod:`tfpconv.keras.training`) asks of a constraint set.

A constraint set (pattern + connectivity pruning, weight unification, ...) chooses its layers,
projects their kernels onto the set at a point of the training schedule, fixes its structure for the
hard phase and keeps it there after every optimizer step. The machinery owns everything else: the
phases, magnitude projection or ADMM, the ramp, the learning rate, workers, logs. Several constraint
sets in one callback compose per layer, in order: a layer's projection is the second set's
projection of the first set's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class SchedulePoint:
    """Where training is on the pruning schedule.

    Attributes:
      step: training steps (batch-hook calls) since ``fit`` began.
      ramp: the shared ramp, rising from 0 to 1 over the first three quarters of the pruning
        phase (0 while the phase length is not known yet); constant targets scale by it.
      final_step: the last step of ``fit`` (for schedules given as functions of the step).
    """

    step: int
    ramp: float
    final_step: int


class Constraint:
    """Base class of constraint sets; subclasses override every method that raises.

    Per-layer methods take the layer's position in the list that :meth:`select` returned.
    """

    #: Short name used in messages.
    name = "constraint"
    #: The machinery's methods this set can be trained with.
    methods: tuple[str, ...] = ("admm", "magnitude")

    def variable_of(self, layer: Any) -> Any:
        """The variable of ``layer`` this set constrains (a layer's kernel unless overridden)."""
        return layer.kernel

    def prepare(self, model: Any, at: SchedulePoint) -> None:
        """Called before every round of projections (each magnitude update and the hard phase's
        fix), e.g. to choose among candidate structures by the model's loss."""

    def select(self, model: Any) -> list[Any]:
        """The layers this set constrains, in model order; raise ValueError when there are none
        or the selection names layers it cannot take."""
        raise NotImplementedError

    def left_alone(self, model: Any) -> dict[str, str]:
        """Layers of the kind this set works on that it leaves alone, with the reason."""
        return {}

    def begin(self, kernels: Sequence[np.ndarray], share: Any) -> list[str]:
        """Called once when training starts, with the selected layers' kernels; ``share`` maps a
        list of arrays to worker 0's (so every worker decides alike). Returns messages to print."""
        return []

    def project(self, index: int, weights: np.ndarray, at: SchedulePoint) -> np.ndarray:
        """The weights projected onto the set as it is at ``at`` (same shape and dtype)."""
        raise NotImplementedError

    def fix(self, index: int, weights: np.ndarray, at: SchedulePoint) -> list[np.ndarray]:
        """The final projection for the hard phase: ``[projected, *structure]``, the structure as
        arrays (shared from worker 0 before :meth:`adopt`)."""
        raise NotImplementedError

    def adopt(self, index: int, structure: list[np.ndarray]) -> None:
        """Keep the fixed structure of layer ``index`` (what :meth:`fix` returned after
        ``projected``), for :meth:`enforce`."""
        raise NotImplementedError

    def enforce(self, index: int, weights: tf.Tensor) -> tf.Tensor:
        """The weights with the fixed structure re-applied (TensorFlow ops), after every optimizer
        step of the hard phase."""
        raise NotImplementedError

    def hard_phase_messages(self, at: SchedulePoint) -> list[str]:
        """What to print when the hard phase begins."""
        return []

    def metrics(self, at: SchedulePoint, hard: bool) -> dict[str, float]:
        """Extra per-epoch logs (names without the callback's prefix)."""
        return {}
