"""Keras callbacks that train 3x3 convolutions into PCONV pattern + connectivity sparsity.

Works with Keras 3 (``import keras``) and Keras 2 (``tf_keras``) models alike::

    model.fit(x, y, epochs=10, callbacks=[tfpconv.callbacks.PatternPruning(num_patterns=8,
                                                                           connectivity=0.72)])

List ``PatternPruning`` before ``TensorBoard``, ``ModelCheckpoint``, ``EarlyStopping`` and any
other callback that reads the ``pconv_*`` metrics: callbacks see an epoch's logs in list order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfpconv.keras import compat as _compat
from tfpconv.keras import distributed as _distributed
from tfpconv.keras.layer_selection import LayerFilter, left_alone
from tfpconv.keras.one_shot import (
    LayerTarget,
    check_first_layer,
    exempt_first_layer,
    layer_connectivities,
    layer_targets,
    resolve_library,
)
from tfpconv.keras.schedules import Connectivity, ConnectivitySchedule
from tfpconv.sparsity import patterns
from tfpconv.sparsity.admm import ADMMState
from tfpconv.sparsity.allocation import check_allocation
from tfpconv.sparsity.schedules import cubic_ramp, half_cosine

METHODS = ("admm", "magnitude")
#: Projections (magnitude) or ADMM rounds per pruning phase when ``update_every`` is not given.
UPDATES_PER_PHASE = 32
#: The connectivity ramp reaches its final value at this fraction of the pruning phase.
RAMP_END = 0.75
#: Learning-rate schedules for the hard phase (None: the optimizer's own, untouched).
HARD_PHASE_LR = ("cosine", None)


class PatternPruning(_compat.TfKerasCallbackHooks, keras.callbacks.Callback):
    """Prunes every 3x3 ``Conv2D`` to pattern + connectivity sparsity while ``fit`` trains.

    Training runs in two phases:

    1. **Pruning phase** (the first ``pruning_epochs`` epochs; by default half of ``fit``'s
       epochs, rounded up, leaving at least one epoch for phase 2). A constant connectivity
       rises along a cubic ramp from 0 to its final value at three quarters of the phase;
       ``update_every`` steps apart (default: 32 updates spread over the phase):

       - ``method="magnitude"`` (the default): the weights are projected onto the constraints
         at every update.
       - ``method="admm"``: ADMM with ``Z = project(W + U)`` and ``U += W - Z`` at every update,
         ``rho`` multiplied by ``rho_growth`` (default: the factor that reaches ``rho_max`` at
         the end of the ramp) with ``U`` rescaled to keep the dual. After every optimizer step
         the weights take the exact proximal step of the penalty ``rho/2 ||W - Z + U||^2`` with
         the optimizer's current learning rate ``lr``:
         ``W <- (W + lr*rho*(Z - U)) / (1 + lr*rho)`` (the same as adding the penalty to the
         loss under SGD, and stable for any ``rho``).

    2. **Hard phase** (the remaining epochs): the weights are projected once more, the masks are
       fixed and re-applied after every optimizer step, so when ``fit`` returns every pruned
       kernel is exactly one library pattern or all zeros (also if training stops early). With
       ``hard_phase_lr="cosine"`` (the default) a plain learning rate falls from its value to 0
       along a half cosine over the phase, and is given back when ``fit`` ends; an optimizer
       built on a ``LearningRateSchedule`` keeps its schedule.

    The defaults are the best recipe measured on short fine-tuning budgets (prune a trained
    network in as many epochs as it trained; ``benchmarks/accuracy_short.py``): magnitude
    projection beat ADMM there, spreading the updates over the phase, leaving the first
    convolution dense, the Erdős–Rényi split and the hard-phase cosine each added accuracy. See
    ``benchmarks/results/accuracy_short.md`` for the figures.

    The pattern library is chosen from the weights when training starts (the ``num_patterns`` most
    frequent top-4-magnitude masks over all pruned layers; removed kernels do not vote, so a model
    already projected by ``tfpconv.prune_patterns`` keeps its library) unless ``library`` is given.
    A subclassed model that was never called is built by its first training step: pruning then
    starts after that step.

    Logs (progress bar, History, TensorBoard) gain per epoch: ``pconv_connectivity`` (current
    target), ``pconv_gap`` (relative distance ||W - Z|| / ||W|| of the weights to the constraint
    set; 0 in the hard phase), ``pconv_density`` (non-zero fraction of the pruned 3x3 weights) and,
    with ADMM, ``pconv_rho``. They are added in this callback's ``on_epoch_end``, so list
    ``PatternPruning`` before ``TensorBoard``, ``ModelCheckpoint``, ``EarlyStopping`` or any
    callback that reads them.

    Keras runs callbacks' batch hooks once per ``train_function`` call: with
    ``model.compile(steps_per_execution=N)`` the masks and the ADMM pull are applied after every
    N-th optimizer step (the steps in between move pruned weights freely), and ``update_every`` and
    connectivity schedules count those calls, not steps. The callback warns about it; the trained
    model is still exactly pattern-sparse, as the masks are applied again when ``fit`` ends.

    Under ``tf.distribute`` it supports no strategy, ``OneDeviceStrategy``, ``MirroredStrategy``
    and ``MultiWorkerMirroredStrategy`` (tf_keras models: Keras 3 cannot train on several workers
    itself). Across workers the library, codes, masks and ADMM state are computed on every worker
    and replaced by worker 0's (a collective broadcast), so all workers prune identically. Other
    strategies (``ParameterServerStrategy``, ``CentralStorageStrategy``, ``TPUStrategy``) are
    refused with a ValueError when ``fit`` starts (see :mod:`tfpconv.keras.distributed`).

    Args:
      num_patterns: library size K, 1..56 (8 is PCONV's choice).
      connectivity: fraction of 3x3 kernels removed in [0, 1) (per layer, or over the layers
        together with a non-uniform ``connectivity_allocation``); or per layer, a mapping from
        layer name to fraction (layers not named lose no kernels; the allocation does not apply;
        every layer follows the ramp in proportion); or a callable
        ``step -> fraction``; or, with tf_keras, a tensorflow-model-optimization schedule such as
        ``tfmot.sparsity.keras.PolynomialDecay`` (``step`` counts training batches of this fit).
        The hard phase uses its value at the last training step.
      method: ``"magnitude"`` or ``"admm"``.
      library: the pattern library to use, as 9-bit masks (e.g. ``[0b000111010, ...]``),
        instead of choosing it from the weights.
      layers: None (every 3x3 Conv2D), a list of layer names, or a predicate on layers.
      first_layer: what the model's first convolution gets when it is a 3x3 layer: ``"dense"``
        (the default: left alone; it sees the image, has few weights to save and each matters),
        ``"patterns"`` (patterns only; ``tfpconv.prune_patterns``' default) or ``"full"``
        (patterns and connectivity). A 3x3 layer behind a stem of another size, as in ResNet,
        is pruned like the others.
      connectivity_allocation: how the connectivity target is split over the layers:
        ``"erdos_renyi"`` (the default) removes that fraction of all their kernels together,
        keeping each layer's kernel density proportional to ``(in + out) / (in * out)``, so wide
        layers lose more and narrow ones fewer (see :mod:`tfpconv.allocation`); ``"uniform"``
        removes that fraction from every layer.
      pruning_epochs: length of the pruning phase in epochs (0 = project at once, then only the
        hard phase).
      update_every: steps between ADMM updates / magnitude projections; None spreads
        :data:`UPDATES_PER_PHASE` of them over the pruning phase (once per epoch while the
        number of steps per epoch is not known yet).
      rho, rho_growth, rho_max: the ADMM penalty schedule (``rho_growth=None``: reach
        ``rho_max`` at the end of the ramp).
      hard_phase_lr: ``"cosine"`` or None (leave the learning rate to the optimizer).
      verbose: 1 prints the chosen library, the convolutions left alone (with the reason) and the
        phase change; 0 is silent.
    """

    def __init__(
        self,
        num_patterns: int = 8,
        connectivity: Connectivity | Mapping[str, float] = 0.0,
        method: str = "magnitude",
        *,
        library: Sequence[int] | None = None,
        layers: LayerFilter = None,
        first_layer: str = "dense",
        connectivity_allocation: str = "erdos_renyi",
        pruning_epochs: int | None = None,
        update_every: int | None = None,
        rho: float = 1.0,
        rho_growth: float | None = None,
        rho_max: float = 100.0,
        hard_phase_lr: str | None = "cosine",
        verbose: int = 1,
    ) -> None:
        super().__init__()
        patterns.check_num_patterns(num_patterns)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        if library is not None:
            patterns.check_library(library)
        check_allocation(connectivity_allocation)
        check_first_layer(first_layer)
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
        if not (rho > 0 and (rho_growth is None or rho_growth >= 1) and rho_max >= rho):
            raise ValueError(
                f"need rho > 0, rho_growth >= 1 and rho_max >= rho; got rho={rho}, "
                f"rho_growth={rho_growth}, rho_max={rho_max}"
            )
        self.num_patterns = num_patterns
        #: Per layer name, the final fraction of kernels removed (None: ``connectivity`` is
        #: model-wide). The schedule then runs to the largest of them and scales the others.
        self.per_layer: dict[str, float] | None = None
        if isinstance(connectivity, Mapping):
            for value in connectivity.values():
                patterns.check_connectivity(value)
            self.per_layer = {str(k): float(v) for k, v in connectivity.items()}
            connectivity = max(self.per_layer.values(), default=0.0)
        self.connectivity = ConnectivitySchedule(connectivity)
        self.method = method
        self.layers = layers
        self.first_layer = first_layer
        self.connectivity_allocation = connectivity_allocation
        self.pruning_epochs = pruning_epochs
        self.update_every = update_every
        self.rho_initial, self.rho_max = float(rho), float(rho_max)
        self.rho_growth = None if rho_growth is None else float(rho_growth)
        self.hard_phase_lr = hard_phase_lr
        self.verbose = verbose
        self._lr_decay: tuple[float, int, int] | None = None
        self._given_library = library
        #: The pattern library in use (9-bit masks), set when training starts.
        self.library: np.ndarray | None = None
        #: Per pruned layer name, the (in, out) codes fixed in the hard phase (library position
        #: or -1 for a removed kernel).
        self.codes: dict[str, np.ndarray] = {}
        self._targets: list[LayerTarget] = []
        self._phase = "idle"
        self._sync = _distributed.Synchronizer(None)

    # -- phases --------------------------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not _compat.is_tf_keras_object(self.model):
            _compat.check_backend()
        strategy = _distributed.model_strategy(self.model)
        _distributed.check_strategy(strategy, f"tfpconv.callbacks.{type(self).__name__}")
        self._sync = _distributed.Synchronizer(strategy)
        self._epochs = int(self.params.get("epochs") or 1)
        self._steps_per_epoch = self.params.get("steps")
        self._hard_start_epoch = self._resolve_pruning_epochs()
        self._step = 0
        self._rho = self.rho_initial
        self._ramp = None
        self._lr_decay = None
        self.codes = {}
        self._warn_about_steps_per_execution()
        if self.model.built:
            self._start()
        else:  # a subclassed model that was never called: its first training step builds it
            self._phase = "unbuilt"

    def _start(self) -> None:
        """Find the layers, choose the library and begin the first phase."""
        self._targets = layer_targets(self.model, self.layers, self.first_layer)
        if self.per_layer is not None:
            unknown = sorted(set(self.per_layer) - {t.name for t in self._targets})
            if unknown:
                raise ValueError(
                    f"tfpconv.callbacks.PatternPruning: connectivity names layers that are not "
                    f"pruned 3x3 convolutions of {self.model.name!r}: {unknown}"
                )
        library = resolve_library(self._targets, self.num_patterns, self._given_library)
        (self.library,) = self._sync.from_first_worker([library])
        self._say(
            f"tfpconv: pruning {len(self._targets)} layers, library "
            + " ".join(patterns.format_mask(int(mask)) for mask in self.library)
        )
        by_reason: dict[str, list[str]] = {}
        exempt = exempt_first_layer(self.model, self.first_layer)
        for layer in left_alone(self.model, [t.layer for t in self._targets]):
            reason = layer.reason
            if exempt is not None and layer.name == exempt.name:
                reason = "the model's first convolution, first_layer='dense'"
            by_reason.setdefault(reason, []).append(layer.name)
        for reason, names in by_reason.items():
            self._say(f"tfpconv: left alone ({reason}): {', '.join(names)}")
        if self._hard_start_epoch == 0:
            self._enter_hard_phase()
        elif self.method == "admm":
            self._phase = "admm"
            self._admm = [
                ADMMState.start(t.kernel(), projection)
                for t, projection in zip(self._targets, self._projections(), strict=True)
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
            f"tfpconv.callbacks.PatternPruning: the model is compiled with "
            f"steps_per_execution={steps}, so Keras calls the callback once per {every}: "
            f"the masks and the ADMM pull apply only after every such call, "
            f"and update_every / connectivity schedules count calls, not steps. The model is "
            f"still exactly pattern-sparse when fit ends; compile with steps_per_execution=1 for "
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
            for target, mask in zip(self._targets, self._masks, strict=True):
                variable = _compat.tf_variable(target.layer.kernel)
                variable.assign(variable * mask)
            self._decay_learning_rate()
            return
        if self._phase == "admm":
            strength = _compat.learning_rate(self.model.optimizer) * self._rho
            for target, pull in zip(self._targets, self._pull_targets, strict=True):
                variable = _compat.tf_variable(target.layer.kernel)
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
            for target, mask in zip(self._targets, self._masks, strict=True):
                variable = _compat.tf_variable(target.layer.kernel)
                variable.assign(variable * mask)
        if self._lr_decay is not None:  # the user's optimizer gets its learning rate back
            _compat.set_learning_rate(self.model.optimizer, self._lr_decay[0])
            self._lr_decay = None
        self._phase = "done"

    # -- projections ---------------------------------------------------------------------------

    def _phase_steps(self) -> int | None:
        """Training steps in the pruning phase, once the steps per epoch are known."""
        if self._steps_per_epoch is None:
            return None
        return self._hard_start_epoch * self._steps_per_epoch

    def _update_interval(self) -> int | None:
        """Steps between updates: ``update_every``, else :data:`UPDATES_PER_PHASE` spread over
        the pruning phase; None while the phase length is unknown (an update per epoch)."""
        if self.update_every is not None:
            return self.update_every
        steps = self._phase_steps()
        return None if steps is None else max(round(steps / UPDATES_PER_PHASE), 1)

    def _current_connectivity(self) -> float:
        if self.connectivity.constant is not None:
            if self._ramp is None:
                steps = self._phase_steps()
                if steps is None:
                    return 0.0
                self._ramp = cubic_ramp(
                    self.connectivity.constant, 0, max(int(RAMP_END * steps), 1)
                )
            return self._ramp(self._step)
        return self.connectivity(self._step)

    def _rho_factor(self) -> float:
        """``rho_growth``, or the factor that takes rho from its start to ``rho_max`` over the
        updates of the connectivity ramp."""
        if self.rho_growth is not None:
            return self.rho_growth
        steps, interval = self._phase_steps(), self._update_interval()
        if steps is None or interval is None:
            return 2.0
        updates = max(RAMP_END * steps / interval, 1.0)
        return (self.rho_max / self.rho_initial) ** (1.0 / updates)

    def _final_connectivity(self) -> float:
        if self.connectivity.constant is not None:
            return self.connectivity.constant
        steps = self._steps_per_epoch or max(self._step, 1)
        return self.connectivity(max(self._epochs * steps, self._step))

    def _fractions(self, connectivity: float) -> list[float]:
        """Per target, the fraction of kernels removed at the model-wide ``connectivity``."""
        if self.per_layer is not None:
            peak = self.connectivity.constant or 0.0
            share = connectivity / peak if peak > 0 else 0.0
            return [self.per_layer.get(t.name, 0.0) * share for t in self._targets]
        return layer_connectivities(self._targets, connectivity, self.connectivity_allocation)

    def _projections(self) -> list[Any]:
        """Per target, ``weights -> projected weights`` at the current connectivity."""
        library = self.library
        return [
            lambda weights, fraction=fraction: patterns.project(weights, library, fraction)[0]
            for fraction in self._fractions(self._current_connectivity())
        ]

    def _update(self) -> None:
        if self._phase == "admm":
            rho = min(self._rho * self._rho_factor(), self.rho_max)
            for target, state, projection in zip(
                self._targets, self._admm, self._projections(), strict=True
            ):
                state.update(target.kernel(), projection)
                state.rescale_penalty(rho / self._rho)
            self._rho = rho
            self._share_admm_state()
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
        projected = [
            projection(target.kernel())
            for target, projection in zip(self._targets, self._projections(), strict=True)
        ]
        projected = self._sync.from_first_worker(projected)
        for target, weights in zip(self._targets, projected, strict=True):
            _compat.assign(target.layer.kernel, weights)

    def _enter_hard_phase(self) -> None:
        final = self._final_connectivity()
        self._masks = []
        results = [
            patterns.project(target.kernel(), self.library, fraction)
            for target, fraction in zip(self._targets, self._fractions(final), strict=True)
        ]
        shared = self._sync.from_first_worker([a for result in results for a in result])
        for index, target in enumerate(self._targets):
            projected, codes = shared[2 * index], shared[2 * index + 1]
            _compat.assign(target.layer.kernel, projected)
            self.codes[target.name] = codes
            mask = patterns.projection_mask(codes, self.library)
            self._masks.append(self._constant(mask, _compat.tf_variable(target.layer.kernel).dtype))
        self._phase = "hard"
        self._admm, self._pull_targets = [], []
        self._start_learning_rate_decay()
        self._say(
            f"tfpconv: hard phase from step {self._step}: masks fixed (connectivity {final:g})"
        )
        if self.connectivity_allocation != "uniform" and self.per_layer is None:
            split = ", ".join(
                f"{t.name} {fraction:.2f}"
                for t, fraction in zip(self._targets, self._fractions(final), strict=True)
            )
            self._say(
                f"tfpconv: kernels removed per layer ({self.connectivity_allocation}): {split}"
            )

    def _start_learning_rate_decay(self) -> None:
        """With ``hard_phase_lr="cosine"``, let the learning rate fall from its current value to
        0 over the remaining steps (the fine-tuning of the fixed masks converges in them)."""
        optimizer = getattr(self.model, "optimizer", None)
        remaining = self._epochs * (self._steps_per_epoch or 0) - self._step
        if self.hard_phase_lr is None or optimizer is None or remaining <= 0:
            return
        start = _compat.learning_rate(optimizer)
        if not _compat.set_learning_rate(optimizer, start):
            self._say("tfpconv: the optimizer follows its own learning-rate schedule: kept")
            return
        self._lr_decay = (start, self._step, remaining)

    def _decay_learning_rate(self) -> None:
        if self._lr_decay is None:
            return
        start, first_step, span = self._lr_decay
        _compat.set_learning_rate(
            self.model.optimizer, half_cosine(start, (self._step - first_step) / span)
        )

    # -- helpers -------------------------------------------------------------------------------

    def _metrics(self) -> dict[str, float]:
        kernels = [t.kernel() for t in self._targets]
        total = sum(k.size for k in kernels)
        metrics = {
            "pconv_connectivity": float(
                self._final_connectivity()
                if self._phase in ("hard", "done")
                else self._current_connectivity()
            ),
            "pconv_density": float(sum(np.count_nonzero(k) for k in kernels) / max(total, 1)),
        }
        if self._phase == "admm":
            gaps = [state.gap(k) for state, k in zip(self._admm, kernels, strict=True)]
            metrics["pconv_gap"] = float(np.mean(gaps))
            metrics["pconv_rho"] = self._rho
        elif self._phase == "magnitude":
            gaps = [
                np.linalg.norm(k - projection(k)) / max(np.linalg.norm(k), 1e-12)
                for projection, k in zip(self._projections(), kernels, strict=True)
            ]
            metrics["pconv_gap"] = float(np.mean(gaps))
        else:
            metrics["pconv_gap"] = 0.0
        return metrics

    @staticmethod
    def _constant(value: np.ndarray, dtype: Any = tf.float32) -> tf.Tensor:
        return tf.constant(np.asarray(value), dtype=dtype)

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message)
