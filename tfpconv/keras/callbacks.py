"""Keras callbacks that train a model into hardware-friendly sparsity while ``model.fit`` runs.

Works with Keras 3 (``import keras``) and Keras 2 (``tf_keras``) models alike::

    model.fit(x, y, epochs=10, callbacks=[tfpconv.callbacks.PatternPruning(num_patterns=8,
                                                                           connectivity=0.72)])

Both callbacks are the one machinery of :mod:`tfpconv.keras.training` with their constraint sets:
``PatternPruning`` (PCONV patterns + connectivity on 3x3 convolutions, optionally unifying the kept
kernels) and ``WeightUnification`` (unified and pruned weight blocks in ``Dense`` and 1x1 layers).
List them before ``TensorBoard``, ``ModelCheckpoint``, ``EarlyStopping`` and any other callback
that reads their metrics: callbacks see an epoch's logs in list order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfpconv.keras.activation_constraint import DEFAULT_CANDIDATES, ActivationMasks
from tfpconv.keras.layer_selection import LayerFilter
from tfpconv.keras.one_shot import FilterGroup
from tfpconv.keras.pattern_constraint import PatternConnectivity
from tfpconv.keras.schedules import Connectivity
from tfpconv.keras.training import (
    HARD_PHASE_LR,
    METHODS,
    RAMP_END,
    UPDATES_PER_PHASE,
    SparsityTraining,
)
from tfpconv.keras.unification_constraint import Unification
from tfpconv.sparsity import unification

#: Magnitude projections or ADMM rounds ``PatternPruning`` spreads over its pruning phase when
#: ``update_every`` is not given. A pattern projection costs little next to a training step
#: (0.38 s for all of VGG-16's 3x3 kernels on one core), and accuracy rose with every doubling of
#: the projections on the short budget: 256 of them (a projection every 2 steps there) kept 0.21
#: points more than 32 (``benchmarks/results/accuracy_short.md``, ``update-*`` rows). ADMM, whose
#: rounds restart the weights from Z, gains from them the same way.
PATTERN_PROJECTIONS_PER_PHASE = 256

#: Factor by which ``PatternPruning``'s ADMM fades the scaled dual U after every round in layers
#: whose filters are grouped (``filter_group`` above 1; with ``dual_decay="auto"``, the default).
#: Under Adam a removed weight moves by about the learning rate every step whatever its gradient,
#: and with groups a removed weight comes back only with its group's: an undamped U (plain ADMM)
#: there cost 0.13 points against magnitude projection (BatchNorm network, filter groups of 4),
#: faded by 0.9 per round (U remembers about the last 10 rounds) it gained 0.10, five seeds of five.
#: Ungrouped layers keep plain ADMM, which gained 0.25 there, where 0.9 lost 0.18
#: (``benchmarks/results/accuracy_short.md``; README, "ADMM with filter groups").
GROUPED_DUAL_DECAY = 0.9

__all__ = [
    "ActivationSparsity",
    "GROUPED_DUAL_DECAY",
    "HARD_PHASE_LR",
    "METHODS",
    "PATTERN_PROJECTIONS_PER_PHASE",
    "RAMP_END",
    "UPDATES_PER_PHASE",
    "PatternPruning",
    "SparsityTraining",
    "WeightUnification",
]


class PatternPruning(SparsityTraining):
    """Prunes every 3x3 ``Conv2D`` to pattern + connectivity sparsity while ``fit`` trains.

    Training runs in two phases:

    1. **Pruning phase** (the first ``pruning_epochs`` epochs; by default half of ``fit``'s
       epochs, rounded up, leaving at least one epoch for phase 2). A constant connectivity
       rises along a cubic ramp from 0 to its final value at three quarters of the phase;
       ``update_every`` steps apart (default: 256 magnitude projections or ADMM rounds spread
       over the phase):

       - ``method="magnitude"`` (the default): the weights are projected onto the constraints
         at every update. With ``restore_norms=True`` (the default) each output channel's kept
         weights are then scaled back to the L2 norm the whole filter had before the projection
         (at most 3x; :func:`tfpconv.sparsity.norms.restore_norms`), so the layer's output keeps
         its scale and the layers after it need not relearn it; the hard phase's projection does
         the same. Layers whose output goes only into a ``BatchNormalization`` are left as
         projected: BatchNorm renormalizes them anyway.
       - ``method="admm"``: ADMM with ``Z = project(W + U)`` (its filter norms restored too, with
         ``restore_norms``) and ``U = dual_decay * (U + W - Z)`` at every update; then the
         weights restart from ``Z``, so the network trains on weights that satisfy the
         constraints while the scaled dual ``U`` accumulates what the projections removed and
         brings back, at the next round, weights that the loss keeps regrowing (in layers with
         filter groups U fades by 0.9 per round, so that only a recent, steady regrowth brings a
         group's weights back: ``dual_decay``). After every optimizer step the weights
         take the exact proximal step of the penalty ``rho/2 ||W - Z + U||^2`` with the
         optimizer's current learning rate ``lr``: ``W <- (W + lr*rho*(Z - U)) / (1 + lr*rho)``
         (the same as adding the penalty to the loss under SGD, and stable for any ``rho``).
         With ``rho_max`` above ``rho``, ``rho`` is multiplied by ``rho_growth`` at every update
         (default: the factor that reaches ``rho_max`` at the end of the ramp) with ``U``
         rescaled to keep the dual. The default, a constant ``rho=1``, keeps the pull weak,
         which measured best: growing it to 10 or 100 locked the first rounds' choices in.

    2. **Hard phase** (the remaining epochs): the weights are projected once more, the masks are
       fixed and re-applied after every optimizer step, so when ``fit`` returns every pruned
       kernel is exactly one library pattern or all zeros (also if training stops early). With
       ``hard_phase_lr="cosine"`` (the default) a plain learning rate falls from its value to 0
       along a half cosine over the phase, and is given back when ``fit`` ends; an optimizer
       built on a ``LearningRateSchedule`` keeps its schedule.

    The defaults are the best recipe measured on short fine-tuning budgets (prune a trained
    network in as many epochs as it trained; ``benchmarks/accuracy_short.py``): magnitude
    projection (ADMM keeps 0.25 points more without BatchNorm and, with its dual fading in the
    grouped layers, 0.10 more with it, five seeds of five; it becomes the default once the
    12-epoch benchmark confirms it), spreading 256 projections over the phase,
    leaving the first convolution dense, the Erdős–Rényi split, the hard-phase cosine and
    restoring the filter norms (0.4 points without BatchNorm) each added accuracy. See
    ``benchmarks/results/accuracy_short.md`` for the figures.

    The pattern library is chosen from the weights when training starts (the ``num_patterns`` most
    frequent top-4-magnitude masks over all pruned layers; removed kernels do not vote, so a model
    already projected by ``tfpconv.prune_patterns`` keeps its library) unless ``library`` is given.
    A subclassed model that was never called is built by its first training step: pruning then
    starts after that step.

    Logs (progress bar, History, TensorBoard) gain per epoch: ``pconv_connectivity`` (current
    target), ``pconv_gap`` (relative distance ||W - Z|| / ||W|| of the weights to the constraint
    set; 0 in the hard phase), ``pconv_density`` (non-zero fraction of the pruned 3x3 weights),
    with ``unify`` ``pconv_unified`` (the target fraction of kept kernels unified) and, with ADMM,
    ``pconv_rho``. They are added in this callback's ``on_epoch_end``, so list
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
      filter_group: how many consecutive filters (output channels) share their kernels'
        structure: on every input channel their g kernels take one pattern together and are kept
        or removed together (by their summed norm); 1 lets every kernel choose alone. With 4 the
        delegate loads each input vector once for 4 filters: its 3x3 layers ran 1.5x faster with
        AVX-512 (VGG-16 at connectivity 0.72 4.7x faster than XNNPACK instead of 3.2x, ResNet-18
        2.9x instead of 2.1x; AMD EPYC Zen 5), for 0.2 points of test accuracy where
        BatchNormalization follows the convolutions and 0.8 where nothing does, on the README's
        short fine-tuning budget. ``"auto"`` (the default) therefore groups 4 filters in the
        layers whose output goes only into a ``BatchNormalization`` and none elsewhere (in a
        subclassed model, whose graph cannot be followed, none). The delegate finds such groups
        in any converted model.
      pruning_epochs: length of the pruning phase in epochs (0 = project at once, then only the
        hard phase).
      update_every: steps between ADMM updates / magnitude projections; None spreads
        :data:`PATTERN_PROJECTIONS_PER_PHASE` (256) of them over the pruning phase (once per
        epoch while the number of steps per epoch is not known yet).
      rho, rho_growth, rho_max: the ADMM penalty schedule: ``rho`` to start with, growing to
        ``rho_max`` (None: ``rho``, a constant penalty) by ``rho_growth`` per update
        (None: the factor that reaches ``rho_max`` at the end of the ramp).
      dual_decay: with ADMM, the factor in [0, 1] by which the scaled dual U fades after every
        round, ``U <- dual_decay * (U + W - Z)``: 1 is plain ADMM, 0 makes ``Z`` a projection of
        W alone (magnitude projection); ``"auto"`` (the default) fades it by
        :data:`GROUPED_DUAL_DECAY` (0.9) in the layers whose filters are grouped and not at all
        in the others, which measured best on both networks of the short budget.
      hard_phase_lr: ``"cosine"`` or None (leave the learning rate to the optimizer).
      restore_norms: scale every output channel back to its norm before each magnitude
        projection, ADMM's ``Z`` and the hard phase's projection (True, the default), or keep the
        projected weights as they are (False). Layers that feed only a ``BatchNormalization``
        keep the projected weights either way (in a subclassed model, whose graph cannot be
        followed, every layer is scaled).
      unify: fraction of the kept 3x3 kernels whose four weights are unified (share one
        magnitude, keep their signs; arXiv 2106.08301), chosen per layer by the least unification
        error and fixed with the masks; 0 (the default) unifies none. Unified kernels cost one
        stored value instead of four.
      verbose: 1 prints the chosen library, the convolutions left alone (with the reason) and the
        phase change; 0 is silent.
    """

    log_prefix = "pconv"
    updates_per_phase = PATTERN_PROJECTIONS_PER_PHASE

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
        filter_group: FilterGroup = "auto",
        pruning_epochs: int | None = None,
        update_every: int | None = None,
        rho: float = 1.0,
        rho_growth: float | None = None,
        rho_max: float | None = None,
        dual_decay: float | str = "auto",
        hard_phase_lr: str | None = "cosine",
        restore_norms: bool = True,
        unify: float = 0.0,
        verbose: int = 1,
    ) -> None:
        if isinstance(dual_decay, str) and dual_decay != "auto":
            raise ValueError(
                f"dual_decay must be 'auto' or a number in [0, 1] (1: plain ADMM), "
                f"got {dual_decay!r}"
            )
        self.patterns = PatternConnectivity(
            num_patterns,
            connectivity,
            library=library,
            layers=layers,
            first_layer=first_layer,
            connectivity_allocation=connectivity_allocation,
            filter_group=filter_group,
        )
        constraints = [self.patterns]
        #: The unification of the kept kernels (None when ``unify=0``).
        self.unification = None
        if unify:
            self.unification = Unification(unify, 0.0, follow=self.patterns)
            constraints.append(self.unification)
        super().__init__(
            constraints,
            method,
            pruning_epochs=pruning_epochs,
            update_every=update_every,
            rho=rho,
            rho_growth=rho_growth,
            rho_max=rho_max,
            dual_decay=1.0 if dual_decay == "auto" else dual_decay,
            hard_phase_lr=hard_phase_lr,
            restore_norms=restore_norms,
            verbose=verbose,
        )

        #: ``"auto"`` or the factor every layer's scaled dual fades by (see ``dual_decay``).
        self.dual_decay: float | str = dual_decay

    def _dual_decay(self, entry: Any) -> float:
        if self.dual_decay != "auto":
            return float(self.dual_decay)
        grouped = any(
            constraint is self.patterns and self.patterns.groups[index] > 1
            for constraint, index in entry.chain
        )
        return GROUPED_DUAL_DECAY if grouped else 1.0

    @property
    def num_patterns(self) -> int:
        return self.patterns.num_patterns

    @property
    def library(self) -> np.ndarray | None:
        """The pattern library in use (9-bit masks), set when training starts."""
        return self.patterns.library

    @property
    def codes(self) -> dict[str, np.ndarray]:
        """Per pruned layer name, the (in, out) codes fixed in the hard phase (library position
        or -1 for a removed kernel)."""
        return self.patterns.codes


class WeightUnification(SparsityTraining):
    """Unifies and prunes weight blocks of ``Dense`` and 1x1 ``Conv2D`` layers while ``fit`` trains.

    Micro-structured weight unification (Lin et al., arXiv 2106.08301): a *block* -- by default 8
    consecutive input weights of one output -- is *unified* when its weights share one magnitude
    and keep their own signs (stored as one value plus sign bits, computed with one multiply), and
    *pruned* when it is all zero. Per layer, the ``prune`` fraction of blocks with the least
    squared error of pruning and the ``unify`` fraction with the least error of unifying (the best
    common magnitude of a block is its mean absolute weight) are chosen together, exactly. The
    tfpconv delegate runs such layers from the compressed blocks: at batch 1 a large fully
    connected layer is bound by reading its weights, so reading fewer bytes makes it faster.

    The phases, methods and schedule are :class:`PatternPruning`'s: the fractions ramp up over the
    pruning phase (magnitude projection or ADMM), then the block choice is fixed and re-applied
    after every optimizer step, so when ``fit`` returns the unified blocks share their magnitude
    exactly. Logs gain ``unify_unified`` (the target fraction now), ``unify_density`` (non-zero
    fraction of the weights), ``unify_gap`` and, with ADMM, ``unify_rho``.

    Use it next to ``PatternPruning`` (each callback takes its own layers), or give
    ``PatternPruning(unify=...)`` to unify pattern kernels of 3x3 convolutions.

    Args:
      unify: fraction of each layer's blocks unified, in [0, 1].
      prune: fraction of each layer's blocks pruned, in [0, 1]; ``unify + prune <= 1``.
      block_size: weights per block (consecutive inputs of one output); 4, 8 or 16 are what the
        delegate's kernels read best.
      layers: None (every ``Dense`` and 1x1 ``Conv2D`` layer except the model's output layer),
        a list of layer names, or a predicate on layers.
      method, pruning_epochs, update_every, rho, rho_growth, rho_max, hard_phase_lr, verbose:
        as for :class:`PatternPruning`, except that ``update_every=None`` spreads
        :data:`UPDATES_PER_PHASE` (32) updates over the pruning phase and ``rho`` grows to
        ``rho_max=100`` (the ADMM schedule ``PatternPruning`` had before its rounds restarted
        from Z; not measured again with the restart).

    Example::

        model.fit(x, y, epochs=8, callbacks=[
            tfpconv.callbacks.PatternPruning(num_patterns=8, connectivity=0.72),
            tfpconv.callbacks.WeightUnification(unify=0.5, prune=0.25),
        ])
    """

    log_prefix = "unify"

    def __init__(
        self,
        unify: float = 0.5,
        prune: float = 0.25,
        *,
        block_size: int = unification.DEFAULT_BLOCK_SIZE,
        layers: LayerFilter = None,
        method: str = "magnitude",
        pruning_epochs: int | None = None,
        update_every: int | None = None,
        rho: float = 1.0,
        rho_growth: float | None = None,
        rho_max: float = 100.0,
        hard_phase_lr: str | None = "cosine",
        verbose: int = 1,
    ) -> None:
        self.unification = Unification(unify, prune, block_size=block_size, layers=layers)
        super().__init__(
            [self.unification],
            method,
            pruning_epochs=pruning_epochs,
            update_every=update_every,
            rho=rho,
            rho_growth=rho_growth,
            rho_max=rho_max,
            hard_phase_lr=hard_phase_lr,
            verbose=verbose,
        )

    @property
    def states(self) -> dict[str, np.ndarray]:
        """Per layer name, the block states fixed in the hard phase, ``(out, blocks)``:
        ``tfpconv.sparsity.unification.FREE`` (0), ``UNIFIED`` (1) or ``PRUNED`` (2)."""
        return self.unification.states


class ActivationSparsity(SparsityTraining):
    """Trains the activation masks that :func:`tfpconv.activation.sparsify` added, while ``fit``
    trains.

    Semi-structured activation sparsity (Grimaldi et al., arXiv 2309.06626): each masked
    convolution's output is multiplied by a 0/1 spatial mask that all its channels share, in units
    of up to 8 rows x 16 pixels -- the pixels the delegate's kernels compute together, so a masked
    unit is work the delegate skips. All masks come from one random score map at the input
    resolution, average-pooled to each layer's size (the masks of all layers stay aligned), the
    lowest-scoring units masked.

    The phases are :class:`PatternPruning`'s: over the pruning phase the masked fraction of every
    layer rises along the ramp to the layer's target (``sparsify``'s ``sparsity``), re-set
    ``update_every`` steps apart; with a ``sample`` batch, ``candidates`` random score maps (the
    current one among them) are tried at each update and the one with the least loss on the sample
    is kept. When the hard phase begins the masks freeze. Logs gain ``act_masked`` (zero fraction
    of the masked layers' outputs) and ``act_density``.

    Combine it with the other callbacks in one ``fit``; the first one to reach its hard phase
    drives the learning rate (``hard_phase_lr``), the others leave it alone.

    Args:
      candidates: score maps tried per update when ``sample`` is given.
      sample: ``(x, y)``: a batch of training examples (a few hundred) the candidates are scored
        on; None: a single random score map.
      seed: seed of the random score maps.
      pruning_epochs, update_every, hard_phase_lr, verbose: as for :class:`PatternPruning`,
        except that ``update_every=None`` spreads :data:`UPDATES_PER_PHASE` (32) updates over
        the pruning phase (each scores ``candidates`` maps on the sample).

    Example::

        model = tfpconv.activation.sparsify(model, sparsity=0.2)
        model.compile(...)
        model.fit(x, y, epochs=8, callbacks=[
            tfpconv.callbacks.ActivationSparsity(sample=(x[:256], y[:256])),
        ])
    """

    log_prefix = "act"

    def __init__(
        self,
        candidates: int = DEFAULT_CANDIDATES,
        sample: tuple[object, object] | None = None,
        *,
        seed: int = 0,
        pruning_epochs: int | None = None,
        update_every: int | None = None,
        hard_phase_lr: str | None = "cosine",
        verbose: int = 1,
    ) -> None:
        self.activation_masks = ActivationMasks(candidates, sample, seed)
        super().__init__(
            [self.activation_masks],
            "magnitude",
            pruning_epochs=pruning_epochs,
            update_every=update_every,
            hard_phase_lr=hard_phase_lr,
            verbose=verbose,
        )

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Per mask layer name, the mask frozen in the hard phase, ``(height, width)`` of 0/1."""
        return self.activation_masks.masks
