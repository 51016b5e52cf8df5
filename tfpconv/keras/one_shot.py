"""One-shot projections of a trained Keras model: pattern + connectivity pruning of its 3x3
convolutions (``prune_patterns``; its helpers are shared with the training callbacks) and weight
unification of its Dense and 1x1 layers (``unify_weights``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfpconv.keras import compat as _compat
from tfpconv.keras.constraint import SchedulePoint
from tfpconv.keras.graph import renormalized_layers
from tfpconv.keras.layer_selection import LayerFilter, first_conv_layer, select_prunable_layers
from tfpconv.keras.summary import PruningSummary, summary
from tfpconv.keras.unification_constraint import Unification
from tfpconv.sparsity import patterns, unification
from tfpconv.sparsity.allocation import check_allocation, layer_fractions

#: What happens to the model's first convolution: left ``"dense"``, pattern pruning only
#: (``"patterns"``), or patterns and connectivity like every other layer (``"full"``).
FIRST_LAYER_MODES = ("dense", "patterns", "full")

#: ``filter_group="auto"``: the group of the layers whose output goes only into a
#: ``BatchNormalization``; every other layer gets 1. BatchNorm rescales each filter's output, so
#: tying 4 filters' kernels cost 0.2 points there on the short budget (0.8 without it), and the
#: delegate runs such layers about 1.5x faster (``benchmarks/results/accuracy_short.md``,
#: ``latency_*_fg4.md``).
AUTO_FILTER_GROUP = 4

#: A filter group: a positive integer, or ``"auto"`` (see :data:`AUTO_FILTER_GROUP`).
FilterGroup = int | str


@dataclass
class LayerTarget:
    """One layer to prune, and whether connectivity pruning applies to it."""

    layer: Any
    connectivity_enabled: bool

    @property
    def name(self) -> str:
        return self.layer.name

    def kernel(self) -> np.ndarray:
        return _compat.read(self.layer.kernel)

    @property
    def channels(self) -> tuple[int, int]:
        """``(in_channels, out_channels)``: the layer has ``in * out`` kernels."""
        shape = tuple(self.layer.kernel.shape)
        return int(shape[2]), int(shape[3])


def check_first_layer(first_layer: str) -> None:
    """Raise a ValueError unless ``first_layer`` is one of :data:`FIRST_LAYER_MODES`."""
    if first_layer not in FIRST_LAYER_MODES:
        raise ValueError(
            f"unknown first_layer {first_layer!r}; use one of {', '.join(FIRST_LAYER_MODES)}"
        )


def exempt_first_layer(model: Any, first_layer: str) -> Any | None:
    """The model's first convolution when ``first_layer="dense"`` leaves it alone, else None."""
    check_first_layer(first_layer)
    return first_conv_layer(model) if first_layer == "dense" else None


def layer_targets(
    model: Any, layers: LayerFilter = None, first_layer: str = "patterns"
) -> list[LayerTarget]:
    """The layers to prune, in model order.

    The model's first convolution sees the input image: it has few input channels, so few
    weights to save, and each of them matters. ``first_layer`` says what it gets when it is a
    selected 3x3 layer (see :data:`FIRST_LAYER_MODES`); behind a stem of another kernel size
    (ResNet's 7x7) every 3x3 layer is pruned alike."""
    exempt = exempt_first_layer(model, first_layer)
    if exempt is not None and not callable(layers) and layers is not None and exempt.name in layers:
        raise ValueError(
            f"layers names {exempt.name!r}, the model's first convolution, which "
            f"first_layer='dense' leaves alone; pass first_layer='patterns' to prune it"
        )
    selected = [layer for layer in select_prunable_layers(model, layers) if layer is not exempt]
    if not selected:
        raise ValueError(
            f"the only 3x3 convolution to prune in {model.name!r} is its first one, "
            f"{exempt.name!r}, which first_layer='dense' leaves alone; pass "
            f"first_layer='patterns' to prune it"
        )
    first = first_conv_layer(model)
    return [
        LayerTarget(layer, connectivity_enabled=first_layer == "full" or layer is not first)
        for layer in selected
    ]


def layer_connectivities(
    targets: Sequence[LayerTarget], connectivity: float, allocation: str = "uniform"
) -> list[float]:
    """Per target, the fraction of kernels to remove: ``connectivity`` of the kernels of the
    connectivity-enabled targets together, split by ``allocation`` (see
    :mod:`tfpconv.allocation`); 0 for the others."""
    enabled = [t for t in targets if t.connectivity_enabled]
    fractions = iter(layer_fractions([t.channels for t in enabled], connectivity, allocation))
    return [next(fractions) if t.connectivity_enabled else 0.0 for t in targets]


def check_filter_group(filter_group: FilterGroup) -> None:
    """Raise a ValueError unless ``filter_group`` is ``"auto"`` or a positive integer."""
    if isinstance(filter_group, str):
        if filter_group != "auto":
            raise ValueError(
                f"filter_group must be 'auto' or a positive integer, got {filter_group!r}"
            )
        return
    patterns.check_filter_group(filter_group)


def layer_filter_groups(
    model: Any, targets: Sequence[LayerTarget], filter_group: FilterGroup
) -> list[int]:
    """Per target, its filter group: ``filter_group`` itself, or with ``"auto"``
    :data:`AUTO_FILTER_GROUP` where a BatchNormalization follows the layer and 1 elsewhere."""
    if filter_group != "auto":
        return [int(filter_group)] * len(targets)
    renormalized = renormalized_layers(model)
    return [AUTO_FILTER_GROUP if id(t.layer) in renormalized else 1 for t in targets]


def resolve_library(
    targets: Sequence[LayerTarget], num_patterns: int, library: Sequence[int] | None
) -> np.ndarray:
    """The given library (validated) or the ``num_patterns`` most frequent top-4 masks."""
    if library is not None:
        return patterns.check_library(library)
    return patterns.select_library([t.kernel() for t in targets], num_patterns)


def prune_patterns(
    model: Any,
    num_patterns: int = 8,
    connectivity: float | Mapping[str, float] = 0.0,
    layers: LayerFilter = None,
    *,
    library: Sequence[int] | None = None,
    first_layer: str = "patterns",
    connectivity_allocation: str = "uniform",
    filter_group: FilterGroup = "auto",
    print_fn: Any = None,
) -> PruningSummary:
    """Project a trained model's 3x3 convolutions onto pattern + connectivity sparsity, in place.

    Every selected kernel keeps the 4 weights of the library pattern that preserves the most of
    its squared norm; then, per layer, the ``connectivity`` fraction of kernels with the smallest
    norm is removed whole (with ``connectivity_allocation="erdos_renyi"`` the fraction varies by
    layer, the same share of all kernels going in total). Fine-tune afterwards with
    :class:`tfpconv.callbacks.PatternPruning` to recover accuracy: it selects the same library
    from the projected weights, and its hard phase keeps the masks.

    Args:
      model: a built Keras 3 or tf_keras model.
      num_patterns: library size K in 1..56.
      connectivity: fraction of kernels removed, in [0, 1): per layer with the uniform
        allocation, over the layers together with another; or per layer, a mapping from layer
        name to fraction (layers not named lose no kernels; the allocation does not apply).
      layers: None (all 3x3 Conv2D), a list of layer names, or a predicate on layers.
      library: the pattern library as 9-bit masks, to use instead of choosing one.
      first_layer: the model's first convolution is left ``"dense"``, gets ``"patterns"`` only
        (the default here: one-shot projection is for measuring speed) or patterns and
        connectivity (``"full"``); see :class:`tfpconv.callbacks.PatternPruning`.
      connectivity_allocation: ``"uniform"`` (the same fraction in every layer) or
        ``"erdos_renyi"`` (wide layers lose more kernels; see :mod:`tfpconv.allocation`).
      filter_group: consecutive filters whose kernels on each input channel share one pattern
        and are kept or removed together; ``"auto"`` (the default) groups 4 in the layers a
        BatchNormalization follows, none elsewhere (see :class:`tfpconv.callbacks.PatternPruning`).
      print_fn: where to print the resulting summary table (None: don't print).

    Returns:
      The per-layer :class:`~tfpconv.report.PruningSummary` after pruning.

    Example::

        report = tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.5)
        print(report.compression)
    """
    patterns.check_num_patterns(num_patterns)
    check_filter_group(filter_group)
    check_allocation(connectivity_allocation)
    targets = layer_targets(model, layers, first_layer)
    groups = layer_filter_groups(model, targets, filter_group)
    chosen = resolve_library(targets, num_patterns, library)
    if isinstance(connectivity, Mapping):
        unknown = sorted(set(connectivity) - {t.name for t in targets})
        if unknown:
            raise ValueError(
                f"connectivity names layers that are not pruned 3x3 convolutions: {unknown}"
            )
        for value in connectivity.values():
            patterns.check_connectivity(value)
        fractions = [float(connectivity.get(t.name, 0.0)) for t in targets]
    else:
        patterns.check_connectivity(connectivity)
        fractions = layer_connectivities(targets, connectivity, connectivity_allocation)
    for target, fraction, group in zip(targets, fractions, groups, strict=True):
        projected, _ = patterns.project(target.kernel(), chosen, fraction, group)
        _compat.assign(target.layer.kernel, projected)
    result = summary(model, print_fn=print_fn, library=chosen)
    pruned = {t.name for t in targets}
    result.layers = [stats for stats in result.layers if stats.name in pruned]
    return result


#: The schedule's end: the one-shot projection applies the final fractions.
_AT_THE_END = SchedulePoint(step=0, ramp=1.0, final_step=0)


def unify_weights(
    model: Any,
    unify: float = 0.5,
    prune: float = 0.25,
    layers: LayerFilter = None,
    *,
    block_size: int = unification.DEFAULT_BLOCK_SIZE,
    print_fn: Any = None,
) -> PruningSummary:
    """Unify and prune weight blocks of a trained model's Dense and 1x1 layers, in place.

    Per layer, the ``prune`` fraction of blocks (``block_size`` consecutive input weights of one
    output) and the ``unify`` fraction are chosen together with the least squared error: a pruned
    block becomes zero, a unified one takes its mean absolute weight with each weight's own sign.
    Fine-tune afterwards with :class:`tfpconv.callbacks.WeightUnification` to recover accuracy.

    Args:
      model: a built Keras 3 or tf_keras model.
      unify, prune: fractions of each layer's blocks, ``unify + prune <= 1``.
      layers: None (every Dense and 1x1 Conv2D except the model's output layer), a list of layer
        names, or a predicate on layers.
      block_size: weights per block (4, 8 or 16 are what the delegate reads best).
      print_fn: where to print the resulting summary table (None: don't print).

    Returns:
      The model's :class:`~tfpconv.keras.summary.PruningSummary` after unification; its
      ``unified`` list has the unified layers.

    Example::

        report = tfpconv.unify_weights(model, unify=0.5, prune=0.25, layers=["fc1", "fc2"])
        print(sum(s.packed_bytes for s in report.unified))
    """
    constraint = Unification(unify, prune, block_size=block_size, layers=layers)
    for index, layer in enumerate(constraint.select(model)):
        projected = constraint.fix(index, _compat.read(layer.kernel), _AT_THE_END)[0]
        _compat.assign(layer.kernel, projected)
    return summary(model, print_fn=print_fn)
