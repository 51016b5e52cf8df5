"""A pruning candidate as a model: channel surgery, then pattern + connectivity projection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tfpconv.keras import channels
from tfpconv.keras.one_shot import prune_patterns

__all__ = ["build_candidate"]


def build_candidate(
    model: Any,
    widths: channels.Widths = 1.0,
    connectivity: float | Mapping[str, float | None] = 0.0,
    num_patterns: int = 8,
) -> Any:
    """A new model: ``model`` channel-pruned to ``widths`` (:func:`tfpconv.channels.prune`), its 3x3
    convolutions then projected onto ``num_patterns`` patterns with ``connectivity``: one fraction
    for every layer but the first (which gets patterns only), or per layer name, where ``None``
    leaves a layer dense. Every filter chooses its own patterns (``filter_group=1``), as the
    latency table times them. The original model is left as it is."""
    smaller = channels.prune(model, widths)
    if not isinstance(connectivity, Mapping):
        prune_patterns(
            smaller, num_patterns=num_patterns, connectivity=connectivity, filter_group=1
        )
        return smaller
    patterned = {name: c for name, c in connectivity.items() if c is not None}
    if patterned:
        prune_patterns(
            smaller,
            num_patterns=num_patterns,
            connectivity=patterned,
            layers=list(patterned),
            first_layer="patterns",
            filter_group=1,
        )
    return smaller
