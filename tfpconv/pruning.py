"""Pattern + connectivity projection of a Keras model's 3x3 convolutions (shared by the one-shot
``prune_patterns`` and the training callbacks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfpconv import _compat, patterns
from tfpconv.layer_selection import LayerFilter, first_conv_layer, select_prunable_layers
from tfpconv.report import PruningSummary, summary


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

    def connectivity(self, fraction: float) -> float:
        return fraction if self.connectivity_enabled else 0.0


def layer_targets(
    model: Any, layers: LayerFilter = None, first_layer_connectivity: bool = False
) -> list[LayerTarget]:
    """The layers to prune, in model order. The model's first convolution, when it is one of them
    (it sees the input image: few input channels, where removing whole kernels hurts most), gets
    pattern pruning only unless asked otherwise; behind a stem of another kernel size (ResNet's
    7x7) every 3x3 layer gets both."""
    selected = select_prunable_layers(model, layers)
    first = first_conv_layer(model)
    return [
        LayerTarget(layer, connectivity_enabled=first_layer_connectivity or layer is not first)
        for layer in selected
    ]


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
    connectivity: float = 0.0,
    layers: LayerFilter = None,
    *,
    library: Sequence[int] | None = None,
    first_layer_connectivity: bool = False,
    print_fn: Any = None,
) -> PruningSummary:
    """Project a trained model's 3x3 convolutions onto pattern + connectivity sparsity, in place.

    Every selected kernel keeps the 4 weights of the library pattern that preserves the most of
    its squared norm; then, per layer, the ``connectivity`` fraction of kernels with the smallest
    norm is removed whole. Fine-tune afterwards with :class:`tfpconv.callbacks.PatternPruning`
    to recover accuracy: it selects the same library from the projected weights, and its hard
    phase keeps the masks.

    Args:
      model: a built Keras 3 or tf_keras model.
      num_patterns: library size K in 1..56.
      connectivity: fraction of kernels removed per layer, in [0, 1).
      layers: None (all 3x3 Conv2D), a list of layer names, or a predicate on layers.
      library: candidate indices (into ``patterns.CANDIDATE_MASKS``) to use instead of choosing.
      first_layer_connectivity: also remove kernels from the model's first convolution (see
        :class:`tfpconv.callbacks.PatternPruning`).
      print_fn: where to print the resulting summary table (None: don't print).

    Returns:
      The per-layer :class:`~tfpconv.report.PruningSummary` after pruning.

    Example::

        report = tfpconv.prune_patterns(model, num_patterns=8, connectivity=0.5)
        print(report.compression)
    """
    patterns.check_num_patterns(num_patterns)
    patterns.check_connectivity(connectivity)
    targets = layer_targets(model, layers, first_layer_connectivity)
    chosen = resolve_library(targets, num_patterns, library)
    for target in targets:
        projected, _ = patterns.project(target.kernel(), chosen, target.connectivity(connectivity))
        _compat.assign(target.layer.kernel, projected)
    result = summary(model, print_fn=print_fn, library=chosen)
    pruned = {t.name for t in targets}
    result.layers = [stats for stats in result.layers if stats.name in pruned]
    return result
