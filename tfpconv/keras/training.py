"""The sparsity-training machinery: one Keras callback driving any composition of constraint sets.

:class:`SparsityTraining` owns the phases, magnitude projection or ADMM, the ramp, the hard
phase's learning rate, distributed workers and the logs; the constraint sets
(:mod:`tfpconv.keras.constraint`) say which layers they take and how to project them.
:class:`tfpconv.callbacks.PatternPruning` and :class:`tfpconv.callbacks.WeightUnification` are
this machinery with their constraint sets.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfpconv.keras import compat as _compat
from tfpconv.keras import distributed as _distributed
from tfpconv.keras import graph as _graph
from tfpconv.keras.constraint import Constraint, SchedulePoint
from tfpconv.sparsity import norms
from tfpconv.sparsity.admm import ADMMState
from tfpconv.sparsity.schedules import cubic_progress, half_cosine

METHODS = ("admm", "magnitude")
#: Projections (magnitude) or ADMM rounds per pruning phase when ``update_every`` is not given (a
#: callback class may set its own ``updates_per_phase``).
UPDATES_PER_PHASE = 32
#: The ramp reaches its final value at this fraction of the pruning phase.
RAMP_END = 0.75
#: Learning-rate schedules for the hard phase (None: the optimizer's own, untouched).
HARD_PHASE_LR = ("cosine", None)

# The callback whose hard-phase schedule drives each optimizer's learning rate: with several
# sparsity callbacks in one fit (patterns, unification, activation masks) the first to enter its
# hard phase decays the rate and the others leave it alone.
_LR_OWNERS: weakref.WeakKeyDictionary[Any, SparsityTraining] = weakref.WeakKeyDictionary()


class _Layer:
    """One constrained layer: the variable its constraint sets act on (its kernel, or e.g. an
    activation mask) and those sets, in order (each with the layer's position in that set's
    selection)."""

    def __init__(self, layer: Any, target: Any) -> None:
        self.layer = layer
        self.target = target
        self.chain: list[tuple[Constraint, int]] = []

    @property
    def name(self) -> str:
        return self.layer.name

    def kernel(self) -> np.ndarray:
        return _compat.read(self.target)

    def variable(self) -> tf.Variable:
        return _compat.tf_variable(self.target)

    def assign(self, value: np.ndarray) -> None:
        _compat.assign(self.target, value)

    def project(self, weights: np.ndarray, at: SchedulePoint) -> np.ndarray:
        for constraint, index in self.chain:
            weights = constraint.project(index, weights, at)
        return weights


class SparsityTraining(_compat.TfKerasCallbackHooks, keras.callbacks.Callback):
    """Trains layers into the constraint sets given, while ``fit`` runs (see
    :class:`tfpconv.callbacks.PatternPruning` for the phases, methods and arguments)."""

    #: Prefix of the per-epoch logs.
    log_prefix = "sparsity"
    #: Updates spread over the pruning phase when ``update_every`` is not given.
    updates_per_phase = UPDATES_PER_PHASE

    def __init__(
        self,
        constraints: Sequence[Constraint],
        method: str = "magnitude",
        *,
        pruning_epochs: int | None = None,
        update_every: int | None = None,
        rho: float = 1.0,
        rho_growth: float | None = None,
        rho_max: float | None = 100.0,
        dual_decay: float = 1.0,
        hard_phase_lr: str | None = "cosine",
        restore_norms: bool = False,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        if hard_phase_lr not in HARD_PHASE_LR:
            raise ValueError(f"unknown hard_phase_lr {hard_phase_lr!r}; use 'cosine' or None")
        if pruning_epochs is not None and (
            not isinstance(pruning_epochs, int) or pruning_epochs < 0
        ):
            raise ValueError(
                f"pruning_epochs must be a non-negative integer, got {pruning_epochs!r}"
            )
        if update_every is not None and (not isinstance(update_every, int) or update_every < 1):
            raise ValueError(
                f"update_every must be a positive number of steps, got {update_every!r}"
            )
        if rho_max is None:  # a constant penalty
            rho_max = rho
        if not (rho > 0 and (rho_growth is None or rho_growth >= 1) and rho_max >= rho):
            raise ValueError(
                f"need rho > 0, rho_growth >= 1 and rho_max >= rho; got rho={rho}, "
                f"rho_growth={rho_growth}, rho_max={rho_max}"
            )
        if not 0.0 <= dual_decay <= 1.0:
            raise ValueError(f"dual_decay must be in [0, 1] (1: plain ADMM), got {dual_decay!r}")
        if not constraints:
            raise ValueError("SparsityTraining needs at least one constraint set")
        for constraint in constraints:
            if method not in constraint.methods:
                allowed = " or ".join(repr(m) for m in constraint.methods)
                raise ValueError(f"{constraint.name} train with method={allowed}, not {method!r}")
        self.constraints = list(constraints)
        self.method = method
        self.pruning_epochs = pruning_epochs
        self.update_every = update_every
        self.rho_initial, self.rho_max = float(rho), float(rho_max)
        self.rho_growth = None if rho_growth is None else float(rho_growth)
        self.dual_decay = float(dual_decay)
        self.hard_phase_lr = hard_phase_lr
        self.restore_norms = bool(restore_norms)
        self.verbose = verbose
        self._lr_decay: tuple[float, int, int] | None = None
        self._layers: list[_Layer] = []
        self._phase = "idle"
        self._sync = _distributed.Synchronizer(None)
        self._admm: list[ADMMState] = []
        self._pull_targets: list[tf.Tensor] = []
        self._renormalized: set[int] = set()  # layers a BatchNormalization follows (by id)

    @property
    def _who(self) -> str:
        return f"tfpconv.callbacks.{type(self).__name__}"

    # -- phases --------------------------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not _compat.is_tf_keras_object(self.model):
            _compat.check_backend()
        strategy = _distributed.model_strategy(self.model)
        _distributed.check_strategy(strategy, self._who)
        self._sync = _distributed.Synchronizer(strategy)
        self._epochs = int(self.params.get("epochs") or 1)
        self._steps_per_epoch = self.params.get("steps")
        self._hard_start_epoch = self._resolve_pruning_epochs()
        self._step = 0
        self._rho = self.rho_initial
        self._lr_decay = None
        self._warn_about_steps_per_execution()
        if self.model.built:
            self._start()
        else:  # a subclassed model that was never called: its first training step builds it
            self._phase = "unbuilt"

    def _start(self) -> None:
        """Find the layers, let the constraint sets begin, and begin the first phase."""
        by_id: dict[int, _Layer] = {}
        for constraint in self.constraints:
            for index, layer in enumerate(constraint.select(self.model)):
                entry = by_id.setdefault(id(layer), _Layer(layer, constraint.variable_of(layer)))
                entry.chain.append((constraint, index))
        self._layers = list(by_id.values())
        self._renormalized = _graph.renormalized_layers(self.model) if self.restore_norms else set()
        for constraint in self.constraints:
            kernels = [
                entry.kernel() for entry in self._layers for c, _ in entry.chain if c is constraint
            ]
            for message in constraint.begin(kernels, self._sync.from_first_worker):
                self._say(message)
            by_reason: dict[str, list[str]] = {}
            for name, reason in constraint.left_alone(self.model).items():
                by_reason.setdefault(reason, []).append(name)
            for reason, names in by_reason.items():
                self._say(f"tfpconv: left alone ({reason}): {', '.join(names)}")
        if self._hard_start_epoch == 0:
            self._enter_hard_phase()
        elif self.method == "admm":
            self._phase = "admm"
            at = self._point()
            self._admm = [
                ADMMState.start(entry.kernel(), self._projection(entry, at))
                for entry in self._layers
            ]
            self._share_admm_state()
        else:
            self._phase = "magnitude"
            self._project_now()

    def _warn_about_steps_per_execution(self) -> None:
        steps = _compat.steps_per_execution(self.model)
        if steps == 1:
            return
        every = f"{steps} steps" if isinstance(steps, int) else "several steps (auto-tuned)"
        warnings.warn(
            f"{self._who}: the model is compiled with "
            f"steps_per_execution={steps}, so Keras calls the callback once per {every}: "
            f"the constraints and the ADMM pull apply only after every such call, "
            f"and update_every / schedules count calls, not steps. The model still satisfies "
            f"the constraints exactly when fit ends; compile with steps_per_execution=1 for "
            f"per-step pruning.",
            UserWarning,
            stacklevel=2,
        )

    def _resolve_pruning_epochs(self) -> int:
        if self.pruning_epochs is None:
            return min(math.ceil(self._epochs / 2), self._epochs - 1)
        if self.pruning_epochs >= self._epochs:
            raise ValueError(
                f"pruning_epochs={self.pruning_epochs} leaves no epoch for the hard phase: fit "
                f"runs {self._epochs} epochs; use pruning_epochs <= {self._epochs - 1}"
            )
        return self.pruning_epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._phase in ("admm", "magnitude") and epoch >= self._hard_start_epoch:
            self._enter_hard_phase()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._step += 1
        if self._phase == "unbuilt":
            self._start()
            return
        if self._phase == "hard":
            self._enforce()
            self._decay_learning_rate()
            return
        if self._phase == "admm":
            strength = _compat.learning_rate(self.model.optimizer) * self._rho
            for entry, pull in zip(self._layers, self._pull_targets, strict=True):
                variable = entry.variable()
                # admm.penalty_step, on the variable in place
                variable.assign((variable + strength * pull) / (1.0 + strength))
        interval = self._update_interval()
        if interval is not None and self._step % interval == 0:
            self._update()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        once_per_epoch = self._update_interval() is None
        if self._steps_per_epoch is None:
            self._steps_per_epoch = max(self._step // (epoch + 1), 1)
        if self._phase in ("admm", "magnitude") and once_per_epoch:
            self._update()
        if logs is not None and self._phase != "unbuilt":
            logs.update(self._metrics())

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._phase in ("admm", "magnitude"):  # stopped before the hard phase began
            self._enter_hard_phase()
        if self._phase == "hard":
            self._enforce()
        if self._lr_decay is not None:  # the user's optimizer gets its learning rate back
            _compat.set_learning_rate(self.model.optimizer, self._lr_decay[0])
            self._lr_decay = None
            _LR_OWNERS.pop(self.model.optimizer, None)
        self._phase = "done"

    # -- the schedule --------------------------------------------------------------------------

    def _phase_steps(self) -> int | None:
        """Training steps in the pruning phase, once the steps per epoch are known."""
        if self._steps_per_epoch is None:
            return None
        return self._hard_start_epoch * self._steps_per_epoch

    def _update_interval(self) -> int | None:
        """Steps between updates: ``update_every``, else ``updates_per_phase`` spread over the
        pruning phase; None while the phase length is unknown (an update per epoch)."""
        if self.update_every is not None:
            return self.update_every
        steps = self._phase_steps()
        return None if steps is None else max(round(steps / self.updates_per_phase), 1)

    def _point(self) -> SchedulePoint:
        steps = self._phase_steps()
        ramp = (
            0.0 if steps is None else cubic_progress(self._step, 0, max(int(RAMP_END * steps), 1))
        )
        per_epoch = self._steps_per_epoch or max(self._step, 1)
        return SchedulePoint(step=self._step, ramp=ramp, final_step=self._epochs * per_epoch)

    def _rho_factor(self) -> float:
        """``rho_growth``, or the factor that takes rho from its start to ``rho_max`` over the
        updates of the ramp."""
        if self.rho_growth is not None:
            return self.rho_growth
        steps, interval = self._phase_steps(), self._update_interval()
        if steps is None or interval is None:
            return 2.0
        updates = max(RAMP_END * steps / interval, 1.0)
        return (self.rho_max / self.rho_initial) ** (1.0 / updates)

    # -- projections ---------------------------------------------------------------------------

    def _update(self) -> None:
        at = self._point()
        if self._phase == "admm":
            rho = min(self._rho * self._rho_factor(), self.rho_max)
            for entry, state in zip(self._layers, self._admm, strict=True):
                state.update(entry.kernel(), self._projection(entry, at), self._dual_decay(entry))
                state.rescale_penalty(rho / self._rho)
            self._rho = rho
            self._share_admm_state()
            # Each round's W-step restarts from Z: the network trains on weights that satisfy
            # the constraints, as under magnitude projection, and U carries what the
            # projections took away into the next round's choice. Continuing from W instead left
            # the weights off the constraint set until the hard phase: with the old schedule (32
            # rounds, rho 1 -> 100) 88.3% against 88.6% with the restart, mean of seeds 0 and 1
            # of the short budget (README, "ADMM").
            for entry, state in zip(self._layers, self._admm, strict=True):
                entry.assign(state.z)
        elif self._phase == "magnitude":
            self._project_now()

    def _share_admm_state(self) -> None:
        """Give every worker worker 0's Z and U, then set the pull targets Z - U from them."""
        shared = self._sync.from_first_worker(
            [array for state in self._admm for array in (state.z, state.u)]
        )
        for index, state in enumerate(self._admm):
            state.z, state.u = shared[2 * index], shared[2 * index + 1]
        self._pull_targets = [self._constant(state.target()) for state in self._admm]

    def _project_now(self) -> None:
        at = self._point()
        for constraint in self.constraints:
            constraint.prepare(self.model, at)
        projected = [self._projection(entry, at)(entry.kernel()) for entry in self._layers]
        projected = self._sync.from_first_worker(projected)
        for entry, weights in zip(self._layers, projected, strict=True):
            entry.assign(weights)

    def _enter_hard_phase(self) -> None:
        at = self._point()
        for constraint in self.constraints:
            constraint.prepare(self.model, at)
        # Each set fixes its structure on what the sets before it left, then worker 0's
        # weights and structures are everyone's.
        arrays: list[np.ndarray] = []
        layout: list[list[int]] = []
        for entry in self._layers:
            weights = before = entry.kernel()
            sizes = []
            for constraint, index in entry.chain:
                fixed = constraint.fix(index, weights, at)
                weights = fixed[0]
                arrays += fixed[1:]
                sizes.append(len(fixed) - 1)
            arrays.append(self._restored(entry, before, weights))
            layout.append(sizes)
        shared = iter(self._sync.from_first_worker(arrays))
        for entry, sizes in zip(self._layers, layout, strict=True):
            for (constraint, index), size in zip(entry.chain, sizes, strict=True):
                constraint.adopt(index, [next(shared) for _ in range(size)])
            entry.assign(next(shared))
        self._phase = "hard"
        self._admm, self._pull_targets = [], []
        self._start_learning_rate_decay()
        self._say(f"tfpconv: hard phase from step {self._step}")
        for constraint in self.constraints:
            for message in constraint.hard_phase_messages(at):
                self._say(message)

    def _enforce(self) -> None:
        for entry in self._layers:
            variable = entry.variable()
            weights = tf.convert_to_tensor(variable)
            for constraint, index in entry.chain:
                weights = constraint.enforce(index, weights)
            variable.assign(weights)

    def _start_learning_rate_decay(self) -> None:
        """With ``hard_phase_lr="cosine"``, let the learning rate fall from its current value to
        0 over the remaining steps (the fine-tuning of the fixed structure converges in them)."""
        optimizer = getattr(self.model, "optimizer", None)
        remaining = self._epochs * (self._steps_per_epoch or 0) - self._step
        if self.hard_phase_lr is None or optimizer is None or remaining <= 0:
            return
        owner = _LR_OWNERS.get(optimizer)
        if owner is not None and owner is not self and owner._lr_decay is not None:
            return  # another sparsity callback of this fit already decays it
        start = _compat.learning_rate(optimizer)
        if not _compat.set_learning_rate(optimizer, start):
            self._say("tfpconv: the optimizer follows its own learning-rate schedule: kept")
            return
        self._lr_decay = (start, self._step, remaining)
        _LR_OWNERS[optimizer] = self

    def _decay_learning_rate(self) -> None:
        if self._lr_decay is None:
            return
        start, first_step, span = self._lr_decay
        _compat.set_learning_rate(
            self.model.optimizer, half_cosine(start, (self._step - first_step) / span)
        )

    # -- helpers -------------------------------------------------------------------------------

    def _dual_decay(self, entry: _Layer) -> float:
        """The factor by which ADMM fades ``entry``'s scaled dual after every round."""
        return float(self.dual_decay)

    def _projection(self, entry: _Layer, at: SchedulePoint) -> Callable[[np.ndarray], np.ndarray]:
        """One layer's projection at ``at``, norms restored (``_restored``): what a magnitude
        update assigns and what ADMM's Z becomes."""
        return lambda weights: self._restored(entry, weights, entry.project(weights, at))

    def _restored(self, entry: _Layer, before: np.ndarray, projected: np.ndarray) -> np.ndarray:
        """With ``restore_norms``, the projected weights with every output channel scaled back
        to its norm before the projection (zeros stay zero), unless a BatchNormalization
        renormalizes the layer's output anyway."""
        if not self.restore_norms or id(entry.layer) in self._renormalized:
            return projected
        return norms.restore_norms(before, projected)

    def _metrics(self) -> dict[str, float]:
        at = self._point()
        hard = self._phase in ("hard", "done")
        kernels = [entry.kernel() for entry in self._layers]
        total = sum(k.size for k in kernels)
        prefix = self.log_prefix
        metrics: dict[str, float] = {}
        for constraint in self.constraints:
            metrics.update(
                {f"{prefix}_{k}": float(v) for k, v in constraint.metrics(at, hard).items()}
            )
        metrics[f"{prefix}_density"] = float(
            sum(np.count_nonzero(k) for k in kernels) / max(total, 1)
        )
        if self._phase == "admm":
            gaps = [state.gap(k) for state, k in zip(self._admm, kernels, strict=True)]
            metrics[f"{prefix}_gap"] = float(np.mean(gaps))
            metrics[f"{prefix}_rho"] = self._rho
        elif self._phase == "magnitude":
            gaps = [
                np.linalg.norm(k - entry.project(k, at)) / max(np.linalg.norm(k), 1e-12)
                for entry, k in zip(self._layers, kernels, strict=True)
            ]
            metrics[f"{prefix}_gap"] = float(np.mean(gaps))
        else:
            metrics[f"{prefix}_gap"] = 0.0
        return metrics

    @staticmethod
    def _constant(value: np.ndarray, dtype: Any = tf.float32) -> tf.Tensor:
        return tf.constant(np.asarray(value), dtype=dtype)

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message)
