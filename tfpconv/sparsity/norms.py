"""Filter norms across a projection: pruning takes energy out of every output channel.

A projection that removes most of a filter's weights also shrinks its output: without BatchNorm
behind the layer, every later layer then sees smaller activations than it was trained on and must
relearn their scale within the fine-tuning budget. Scaling each output channel's kept weights back
to the norm it had before the projection keeps the activations' scale (for roughly independent
inputs, an output's variance follows its filter's squared L2 norm).
"""

from __future__ import annotations

import numpy as np

#: The most a channel is scaled up: a filter that lost nearly all of its energy is not blown up.
MAX_SCALE = 3.0


def restore_norms(
    before: np.ndarray, after: np.ndarray, max_scale: float = MAX_SCALE
) -> np.ndarray:
    """``after`` with each output channel (last axis) scaled to its L2 norm in ``before``.

    Args:
      before: the weights before a projection, e.g. a ``Conv2D`` kernel ``[kh, kw, in, out]`` or a
        ``Dense`` kernel ``[in, out]``.
      after: the projected weights, same shape; zeros stay zero, so the sparsity (and weights that
        share one magnitude) survive.
      max_scale: the largest factor applied to a channel; a channel ``after`` zeroed keeps 1.

    Returns:
      A new array of ``after``'s dtype.
    """
    if before.shape != after.shape:
        raise ValueError(f"shapes differ: {before.shape} before, {after.shape} after")
    if not max_scale >= 1.0:
        raise ValueError(f"max_scale must be at least 1, got {max_scale}")
    axes = tuple(range(after.ndim - 1))
    norm_before = np.sqrt(np.sum(np.square(before, dtype=np.float64), axis=axes))
    norm_after = np.sqrt(np.sum(np.square(after, dtype=np.float64), axis=axes))
    scale = np.ones_like(norm_after)
    kept = norm_after > 0
    scale[kept] = np.minimum(norm_before[kept] / norm_after[kept], max_scale)
    return (after * scale).astype(after.dtype)
