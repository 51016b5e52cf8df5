"""How a model-wide connectivity target is split into per-layer fractions (NumPy only).

``"uniform"`` removes the same fraction of kernels from every layer. ``"erdos_renyi"`` keeps a
layer's kernel density proportional to ``(in + out) / (in * out)`` (the Erdős–Rényi allocation of
Mocanu et al. 2018, as used by RigL): wide layers, which hold most of the kernels and the most
redundancy, lose more of them, narrow ones fewer, and the total removed is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfpconv.sparsity.patterns import check_connectivity

ALLOCATIONS = ("uniform", "erdos_renyi")


def check_allocation(allocation: str) -> None:
    """Raise a ValueError unless ``allocation`` is one of :data:`ALLOCATIONS`."""
    if allocation not in ALLOCATIONS:
        raise ValueError(
            f"unknown connectivity_allocation {allocation!r}; use one of {', '.join(ALLOCATIONS)}"
        )


def layer_fractions(
    shapes: Sequence[tuple[int, int]], connectivity: float, allocation: str = "uniform"
) -> list[float]:
    """Per-layer fractions of kernels to remove, so that over all the layers together the
    ``connectivity`` fraction of the kernels is removed.

    Args:
      shapes: ``(in_channels, out_channels)`` of each layer (a layer has ``in * out`` kernels).
      connectivity: the fraction of all the layers' kernels to remove, in [0, 1).
      allocation: ``"uniform"`` or ``"erdos_renyi"`` (see the module docstring). Layers whose
        Erdős–Rényi density would exceed 1 keep all their kernels, and the others make up for it.

    Returns:
      One fraction in [0, 1) per layer, in the order of ``shapes``.
    """
    check_connectivity(connectivity)
    check_allocation(allocation)
    if allocation == "uniform" or connectivity == 0.0 or not shapes:
        return [float(connectivity)] * len(shapes)
    sizes = np.array([i * o for i, o in shapes], dtype=np.float64)
    scores = np.array([(i + o) / (i * o) for i, o in shapes], dtype=np.float64)
    keep_total = (1.0 - connectivity) * sizes.sum()
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        # Densities scale * score for the free layers; the saturated ones keep everything.
        scale = (keep_total - sizes[dense].sum()) / (sizes[~dense] * scores[~dense]).sum()
        density = np.where(dense, 1.0, scale * scores)
        saturated = density > 1.0
        if not saturated.any():
            break
        dense |= saturated
    return [float(1.0 - d) for d in density]
