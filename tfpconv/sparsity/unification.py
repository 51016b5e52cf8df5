"""Micro-structured weight unification (Lin et al., arXiv 2106.08301), NumPy only.

The weights of a selected *block* are *unified*: they share one magnitude and keep their own
signs, so the block stores one value (plus a sign bit per weight) and costs one multiply. A block
unified to zero is *pruned*; the others stay *free*. For a block ``w`` of ``n`` weights the best
common magnitude is ``mean(|w|)``, and the squared errors of the three states are::

    free:    0
    unified: ||w||^2 - (sum |w|)^2 / n  =  sum (|w| - mean|w|)^2
    pruned:  ||w||^2

Given the fractions of blocks to unify and to prune, :func:`choose_states` picks the states with
the least total squared error (exactly), and the ``project_*`` functions apply them, so they are
Euclidean projections onto "this many blocks unified, this many pruned" (for ADMM, see
:mod:`tfpconv.sparsity.admm`). The ``apply_*`` functions keep states fixed (fine-tuning after the
choice), the ``read_*_states`` functions read them back off the weights.

Block states are ``uint8``: :data:`FREE`, :data:`UNIFIED`, :data:`PRUNED`. Two layouts:

* **Dense layout**, for a Keras ``Dense`` kernel ``(in, out)`` or a 1x1 ``Conv2D`` kernel
  ``(1, 1, in, out)``: block ``b`` of output ``o`` is the run of inputs
  ``[b * block_size, min((b + 1) * block_size, in))`` (the last block is shorter when
  ``in % block_size != 0``). States have shape ``(out, ceil(in / block_size))``, output-major like
  TFLite's FULLY_CONNECTED weights ``[out, in]``.
* **Pattern layout**, for a pattern-pruned 3x3 HWIO kernel ``(3, 3, in, out)``
  (:mod:`tfpconv.sparsity.patterns`): one block per ``(in, out)`` kernel, made of the taps its
  pattern keeps (the boolean HWIO ``keep`` mask, e.g. ``patterns.projection_mask(codes,
  library)``). Kernels with no kept tap (removed by connectivity pruning) are not eligible: they
  are :data:`PRUNED` and do not count in the fractions. States have shape ``(in, out)``.

Every function accepts float32 or float64 weights and returns the input's dtype; the block sums
are float64. Unified magnitudes are exact: a block whose magnitudes are already equal keeps them bit
for bit, so projecting twice gives the same weights as projecting once.
"""

from __future__ import annotations

import heapq

import numpy as np

#: Block states (``uint8``).
FREE = 0
UNIFIED = 1
PRUNED = 2
STATE_DTYPE = np.uint8

DEFAULT_BLOCK_SIZE = 8

# unify + prune may exceed 1 by this much (so that e.g. 0.7 + 0.3 in floating point is accepted).
_FRACTION_SLACK = 1e-9
# choose_states: how many blocks the running k-smallest sums look at per vectorised step.
_CHUNK = 2048


# ----------------------------------------------------------------------------------------------
# Checks and counts


def check_fractions(unify: float, prune: float) -> None:
    """Raise a ValueError unless ``unify`` and ``prune`` are in [0, 1] and sum to at most 1."""
    values = []
    for name, value in (("unify", unify), ("prune", prune)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a fraction of blocks in [0, 1], got {value!r}"
            ) from None
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"{name} must be a fraction of blocks in [0, 1], got {value!r}")
        values.append(number)
    if values[0] + values[1] > 1.0 + _FRACTION_SLACK:
        raise ValueError(
            f"unify + prune must be at most 1 (a block is unified or pruned, not both), got "
            f"unify={unify!r} + prune={prune!r} = {values[0] + values[1]!r}; lower one of them"
        )


def check_block_size(block_size: int) -> None:
    """Raise a ValueError unless ``block_size`` is an integer >= 1."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1 (weights per block), got {block_size}")


def count(num_blocks: int, fraction: float) -> int:
    """How many of ``num_blocks`` blocks a fraction selects: the nearest integer (halves round up),
    at most ``num_blocks``."""
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, (int, np.integer)):
        raise ValueError(f"num_blocks must be an integer >= 0, got {num_blocks!r}")
    if num_blocks < 0:
        raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}") from None
    if not 0.0 <= value <= 1.0 + _FRACTION_SLACK:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    return min(int(num_blocks), int(np.floor(value * num_blocks + 0.5)))


def counts(num_blocks: int, unify: float, prune: float) -> tuple[int, int]:
    """``(num_unify, num_prune)`` for fractions of ``num_blocks`` blocks.

    ``num_prune = count(n, prune)`` and the blocks not left free are ``count(n, unify + prune)``,
    so ``num_unify`` is within one of ``count(n, unify)`` and ``unify + prune == 1`` leaves no block
    free (rounding the two fractions separately could ask for ``n + 1`` blocks).
    """
    check_fractions(unify, prune)
    num_prune = count(num_blocks, prune)
    num_selected = count(num_blocks, min(1.0, float(unify) + float(prune)))
    return num_selected - num_prune, num_prune


# ----------------------------------------------------------------------------------------------
# The exact choice of states


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the ``k`` smallest values; among equal values the earlier index wins."""
    n = values.size
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    threshold = np.partition(values, k - 1)[k - 1]
    below = np.flatnonzero(values < threshold)
    at = np.flatnonzero(values == threshold)[: k - below.size]
    return np.sort(np.concatenate([below, at]))


def _running_smallest_sums(values: np.ndarray, r: int, stop: int) -> np.ndarray:
    """``S[j]`` = the sum of the ``r`` smallest of ``values[: r + j]``, for ``r + j`` in r..stop.

    A max-heap (negated min-heap) holds the ``r`` smallest so far. Its top only decreases, so a
    chunk's values at or above the top at the start of the chunk are rejected without touching the
    heap (they would be pushed and popped straight back); only the others go through Python.
    """
    sums = np.zeros(stop - r + 1, dtype=np.float64)
    if r == 0:
        return sums
    heap = (-values[:r]).tolist()
    heapq.heapify(heap)
    pushpop = heapq.heappushpop
    # deltas[j]: how the sum changes when values[r + j] arrives (0 when it is rejected).
    deltas = np.zeros(stop - r, dtype=np.float64)
    for start in range(r, stop, _CHUNK):
        chunk = values[start : min(start + _CHUNK, stop)]
        entering = np.flatnonzero(chunk < -heap[0])
        if entering.size == 0:
            continue
        incoming = chunk[entering].tolist()
        # The new value replaces the largest kept one (or itself, if it is the largest now).
        evicted = [-pushpop(heap, -value) for value in incoming]
        deltas[start - r + entering] = np.asarray(incoming) - np.asarray(evicted)
    sums[0] = float(np.sum(values[:r]))
    sums[1:] = sums[0] + np.cumsum(deltas)
    return sums


def _split_search(
    unify_error: np.ndarray, prune_error: np.ndarray, num_unify: int, num_prune: int
) -> np.ndarray:
    """The exact optimum over every block (no candidate cut); see :func:`choose_states`."""
    n = unify_error.size
    order = np.argsort(prune_error - unify_error, kind="stable")
    prune_sorted = prune_error[order]
    unify_sorted = unify_error[order]
    last = n - num_unify  # the split k runs over num_prune..last
    # before[k - num_prune]: the num_prune smallest prune errors among the first k blocks;
    # after[k - num_prune]: the num_unify smallest unify errors among the blocks from k on.
    before = _running_smallest_sums(prune_sorted, num_prune, last)
    after = _running_smallest_sums(unify_sorted[::-1], num_unify, n - num_prune)[::-1]
    split = num_prune + int(np.argmin(before + after))
    states = np.full(n, FREE, dtype=STATE_DTYPE)
    states[order[_smallest(prune_sorted[:split], num_prune)]] = PRUNED
    states[order[split + _smallest(unify_sorted[split:], num_unify)]] = UNIFIED
    return states


def choose_states(
    unify_error: np.ndarray, prune_error: np.ndarray, num_unify: int, num_prune: int
) -> np.ndarray:
    """Exactly ``num_prune`` blocks :data:`PRUNED` and ``num_unify`` :data:`UNIFIED`, the rest
    :data:`FREE`, with the least total error ``sum(unify_error[U]) + sum(prune_error[P])``.

    Args:
      unify_error, prune_error: 1-D float arrays, one entry per block (any finite values: the
        optimum is exact for them, not only for errors of actual weights).
      num_unify, num_prune: how many blocks to unify and to prune; their sum is at most the number
        of blocks.

    Returns:
      The states, a ``uint8`` array shaped like the errors. It is a deterministic function of the
      inputs: when only one kind of state is asked for, ties go to the earlier block; otherwise to
      the smallest best split (below), then to the earlier block in the stable ``d`` order.

    Why this is the optimum (exact up to the float64 rounding of the running sums that compare the
    splits):

    * Exchange. Let ``d = prune_error - unify_error`` and order the blocks by ``d``, stably. If an
      optimum prunes a block ``i`` and unifies a block ``j`` that comes before ``i`` (so
      ``d_j <= d_i``), pruning ``j`` and unifying ``i`` instead changes the total by
      ``(p_j + u_i) - (p_i + u_j) = d_j - d_i <= 0``: still an optimum, and with one pair fewer of
      a unified block before a pruned one (no other pair gets out of order). Repeating, some
      optimum has every pruned block before every unified one: there is a split ``k`` with the
      pruned blocks among the first ``k`` and the unified blocks among the rest.
    * Split. For a fixed ``k`` the two choices are independent: the ``num_prune`` smallest prune
      errors among the first ``k`` and the ``num_unify`` smallest unify errors among the rest.
      Every ``k`` gives a feasible assignment and some ``k`` gives an optimum, so the best ``k``
      is optimal. The sums for all ``k`` are running k-smallest sums, kept with a heap from each
      end: O(n log n).
    * Candidate cut, when ``m = num_unify + num_prune`` is below half the blocks. Let ``C_p`` be
      the ``m`` blocks of smallest prune error and ``C_u`` those of smallest unify error. If an
      optimum prunes a block ``i`` outside ``C_p``, then ``C_p`` holds at most ``num_prune - 1``
      pruned and ``num_unify`` unified blocks, so some ``j`` in ``C_p`` is free, and
      ``p_j <= p_i``: pruning ``j`` instead of ``i`` is still an optimum, with one block fewer
      outside its set (likewise for a unified block outside ``C_u``). Repeating, some optimum
      prunes inside ``C_p`` and unifies inside ``C_u``; so it is enough to solve the problem on
      ``C_p | C_u`` (at most ``2 m`` blocks) and leave the others free.

    Measured (NumPy 2.4, Python 3.11, 2 shared CPU cores), with the block errors of random
    normal kernels and block size 8: for the 2,097,152 blocks of a 4096x4096 kernel about 1.3 s
    with unify=0.5, prune=0.2 (0.5 to 1.3 s over other fractions with both states; also about
    1.3 s for independent random errors and for errors ordered against the heap's filter) and
    0.03 s with only one kind of state; for the 294,912 blocks of a 1152x2048 kernel 0.1 s.
    The time goes to the heaps (about 1 us per block that enters one) and one sort.
    """
    unify_error = np.asarray(unify_error, dtype=np.float64)
    prune_error = np.asarray(prune_error, dtype=np.float64)
    if unify_error.ndim != 1 or unify_error.shape != prune_error.shape:
        raise ValueError(
            "choose_states needs two 1-D error arrays of the same length, got shapes "
            f"{unify_error.shape} and {prune_error.shape}; flatten the block errors first"
        )
    if not (np.isfinite(unify_error).all() and np.isfinite(prune_error).all()):
        raise ValueError("choose_states: the block errors must be finite (found NaN or inf)")
    n = unify_error.size
    for name, value in (("num_unify", num_unify), ("num_prune", num_prune)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    num_unify, num_prune = int(num_unify), int(num_prune)
    if num_unify + num_prune > n:
        raise ValueError(
            f"cannot unify {num_unify} and prune {num_prune} of {n} blocks: "
            "num_unify + num_prune must be at most the number of blocks"
        )
    states = np.full(n, FREE, dtype=STATE_DTYPE)
    if num_unify == 0:
        states[_smallest(prune_error, num_prune)] = PRUNED
        return states
    if num_prune == 0:
        states[_smallest(unify_error, num_unify)] = UNIFIED
        return states
    selected = num_unify + num_prune
    if 2 * selected < n:
        candidates = np.union1d(_smallest(prune_error, selected), _smallest(unify_error, selected))
        states[candidates] = _split_search(
            unify_error[candidates], prune_error[candidates], num_unify, num_prune
        )
        return states
    return _split_search(unify_error, prune_error, num_unify, num_prune)


# ----------------------------------------------------------------------------------------------
# Block statistics (shared by both layouts). A block's entries lie along ``axis`` of an array:
# (blocks, block_size, out) with axis 1 for the dense layout, (9, in, out) with axis 0 for the
# pattern layout, so that NumPy's inner loops run along the long, contiguous ``out`` axis.


def _block_stats(
    magnitudes: np.ndarray, valid: np.ndarray | None, lengths: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block: ``(mean |w|, unify error, prune error)``, float64.

    ``magnitudes`` are ``|w|`` (float32 or float64; the sums are float64) with zeros wherever
    ``valid`` is False (``None``: all valid); ``lengths`` holds the number of valid entries of each
    block. Blocks of length 0 get zeros. The mean is clipped to the block's [min, max] (where it
    lies anyway) and a block whose magnitudes are all equal gets a unify error of exactly 0, so
    such a block keeps its magnitude bit for bit when it is unified again.
    """
    axes = list(range(magnitudes.ndim))
    others = [i for i in axes if i != axis]
    total = magnitudes.sum(axis=axis, dtype=np.float64)
    prune_error = np.einsum(magnitudes, axes, magnitudes, axes, others, dtype=np.float64)
    lengths = np.broadcast_to(lengths, total.shape)
    nonempty = lengths > 0
    mean = np.divide(total, lengths, out=np.zeros(total.shape), where=nonempty)
    bounded = magnitudes if valid is None else np.where(valid, magnitudes, np.inf)
    lowest = bounded.min(axis=axis).astype(np.float64)
    highest = magnitudes.max(axis=axis).astype(np.float64)
    mean = np.where(nonempty, np.clip(mean, np.minimum(lowest, highest), highest), 0.0)
    # ||w||^2 - (sum |w|)^2 / n; rounding can leave a tiny negative or (for equal magnitudes)
    # positive value: both are fixed.
    unify_error = np.maximum(prune_error - total * mean, 0.0)
    unify_error[lowest == highest] = 0.0
    return mean, unify_error, prune_error


def _with_states(
    weights: np.ndarray,
    states: np.ndarray,
    mean: np.ndarray,
    valid: np.ndarray | None,
    axis: int,
) -> np.ndarray:
    """``weights`` with per-block ``states`` applied: unified ``sign(w) * mean`` (sign(0) = +1),
    pruned +0, free unchanged (bit for bit); entries outside ``valid`` become 0."""
    zero = weights.dtype.type(0)
    magnitude = np.where(states == UNIFIED, mean, 0.0).astype(weights.dtype)
    # -0.0 + 0.0 = +0.0: sign(0) = +1, also for a negative zero, and pruned blocks get +0.
    values = np.copysign(np.expand_dims(magnitude, axis), weights + zero)
    values += zero
    result = np.where(np.expand_dims(states == FREE, axis), weights, values)
    if valid is not None:
        result = np.where(valid, result, zero)
    return result


def _read_states(magnitudes: np.ndarray, valid: np.ndarray | None, axis: int) -> np.ndarray:
    """States of blocks of ``|w|`` (in the weights' dtype, zeros outside ``valid``): pruned when
    all are 0, unified when all valid ones are equal and non-zero, free otherwise."""
    highest = magnitudes.max(axis=axis)
    lowest = (magnitudes if valid is None else np.where(valid, magnitudes, np.inf)).min(axis=axis)
    states = np.where(lowest == highest, UNIFIED, FREE)
    return np.where(highest == 0, PRUNED, states).astype(STATE_DTYPE)


def _check_states(states: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    states = np.asarray(states)
    if states.shape != tuple(shape):
        raise ValueError(
            f"{what}: expected block states of shape {tuple(shape)}, got {states.shape}"
        )
    if not np.issubdtype(states.dtype, np.integer):
        raise ValueError(
            f"{what}: block states must be integers (FREE, UNIFIED or PRUNED), got dtype "
            f"{states.dtype}"
        )
    bad = (states < FREE) | (states > PRUNED)
    if bad.any():
        raise ValueError(
            f"{what}: block states are FREE={FREE}, UNIFIED={UNIFIED} or PRUNED={PRUNED}, got "
            f"{states[bad].ravel()[0]}"
        )
    return states.astype(STATE_DTYPE)


def _float_weights(weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights)
    if not np.issubdtype(weights.dtype, np.floating):
        weights = weights.astype(np.float32)
    return weights


# ----------------------------------------------------------------------------------------------
# Dense layout


def _dense_matrix(kernel: np.ndarray) -> np.ndarray:
    """The kernel as an ``(in, out)`` float matrix (a view of a 1x1 Conv2D kernel)."""
    kernel = _float_weights(kernel)
    if kernel.ndim == 4 and kernel.shape[:2] == (1, 1):
        return kernel.reshape(kernel.shape[2:])
    if kernel.ndim != 2:
        raise ValueError(
            "expected a Dense kernel of shape (in, out) or a 1x1 Conv2D kernel of shape "
            f"(1, 1, in, out), got shape {kernel.shape}"
        )
    return kernel


def num_blocks_dense(in_features: int, block_size: int) -> int:
    """Blocks per output in the dense layout: ``ceil(in_features / block_size)``."""
    check_block_size(block_size)
    return -(-int(in_features) // int(block_size))


def _block_lengths(in_features: int, block_size: int) -> np.ndarray:
    starts = np.arange(num_blocks_dense(in_features, block_size), dtype=np.int64) * block_size
    return np.minimum(starts + block_size, in_features) - starts


def block_lengths_dense(in_features: int, out_features: int, block_size: int) -> np.ndarray:
    """Weights per block in the dense layout, an ``(out, blocks)`` int64 array (the last block of
    each output is shorter when ``in_features % block_size != 0``)."""
    lengths = _block_lengths(in_features, block_size)
    return np.broadcast_to(lengths, (int(out_features), lengths.size)).copy()


def _dense_blocks(matrix: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(in, out)`` -> ``(blocks, block_size, out)``, zero-padded, and the valid mask
    (``None`` when ``in`` is a multiple of the block size)."""
    check_block_size(block_size)
    in_features, out_features = matrix.shape
    blocks = num_blocks_dense(in_features, block_size)
    padded = blocks * block_size
    valid = None
    if padded != in_features:
        padding = np.zeros((padded - in_features, out_features), dtype=matrix.dtype)
        matrix = np.concatenate([matrix, padding])
        valid = (np.arange(padded) < in_features).reshape(blocks, block_size, 1)
    return matrix.reshape(blocks, block_size, out_features), valid


def _dense_unblock(blocks: np.ndarray, in_features: int, shape: tuple[int, ...]) -> np.ndarray:
    num_blocks, block_size, out_features = blocks.shape
    matrix = blocks.reshape(num_blocks * block_size, out_features)[:in_features]
    return np.ascontiguousarray(matrix).reshape(shape)


def _dense_stats(
    kernel: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's ``(in, out)`` matrix, its blocks and valid mask, and per block (transposed,
    ``(blocks, out)``) the mean magnitude and the unify and prune errors."""
    matrix = _dense_matrix(kernel)
    blocks, valid = _dense_blocks(matrix, block_size)
    lengths = _block_lengths(matrix.shape[0], block_size)[:, np.newaxis]
    stats = _block_stats(np.abs(blocks), valid, lengths, axis=1)
    return matrix, blocks, valid, *stats


def block_errors_dense(
    kernel: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Squared errors of unifying and of pruning every block: two float64 ``(out, blocks)``
    arrays."""
    _, _, _, _, unify_error, prune_error = _dense_stats(kernel, block_size)
    return np.ascontiguousarray(unify_error.T), np.ascontiguousarray(prune_error.T)


def project_dense(
    kernel: np.ndarray, unify: float, prune: float, block_size: int = DEFAULT_BLOCK_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Unify and prune the blocks of a Dense (or 1x1 Conv2D) kernel with the least squared error.

    Args:
      kernel: ``(in, out)`` or ``(1, 1, in, out)``, float32 or float64.
      unify, prune: fractions of all ``out * blocks`` blocks to unify and to prune (see
        :func:`counts` for the rounding).
      block_size: consecutive input weights per block.

    Returns:
      ``(projected, states)``: the kernel's shape and dtype, unified blocks ``sign(w) * mean|w|``
      (``sign(0) = +1``), pruned blocks 0, free blocks unchanged; states ``(out, blocks)`` uint8.
      Between blocks of equal errors the choice goes output-major (see :func:`choose_states`).

    Measured like :func:`choose_states`, with block size 8: 4096x4096 (2,097,152 blocks)
    about 1.7-2.1 s with unify=0.5, prune=0.2 and 0.35 s with prune=0; 1152x2048 (294,912
    blocks) 0.14 s and 0.02 s.
    """
    matrix, blocks, valid, mean, unify_error, prune_error = _dense_stats(kernel, block_size)
    num_unify, num_prune = counts(unify_error.size, unify, prune)
    states = choose_states(
        unify_error.T.ravel(), prune_error.T.ravel(), num_unify, num_prune
    ).reshape(unify_error.T.shape)
    projected = _with_states(blocks, states.T, mean, None, axis=1)
    return _dense_unblock(projected, matrix.shape[0], np.shape(kernel)), states


def apply_dense(
    kernel: np.ndarray, states: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE
) -> np.ndarray:
    """Apply fixed block states (``(out, blocks)``): unified blocks take the mean ``|w|`` of their
    current weights with their current signs (``sign(0) = +1``), pruned blocks 0, free blocks
    unchanged. A unified block whose weights are all 0 stays 0 (and reads back as pruned)."""
    matrix, blocks, valid, mean, _, _ = _dense_stats(kernel, block_size)
    states = _check_states(states, mean.T.shape, "apply_dense")
    projected = _with_states(blocks, states.T, mean, None, axis=1)
    return _dense_unblock(projected, matrix.shape[0], np.shape(kernel))


def read_dense_states(kernel: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Read the block states off a kernel, ``(out, blocks)``: :data:`PRUNED` when all weights of
    the block are 0, :data:`UNIFIED` when their magnitudes are all equal (bitwise) and non-zero
    (so a 1-weight block is unified unless it is 0), :data:`FREE` otherwise."""
    blocks, valid = _dense_blocks(_dense_matrix(kernel), block_size)
    return np.ascontiguousarray(_read_states(np.abs(blocks), valid, axis=1).T)


# ----------------------------------------------------------------------------------------------
# Pattern layout

_TAPS = 9


def _pattern_taps(
    kernel: np.ndarray, keep: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(3, 3, in, out)`` kernel and keep mask -> ``(9, in, out)`` views of their taps."""
    kernel = _float_weights(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise ValueError(
            f"expected a 3x3 HWIO kernel of shape (3, 3, in, out), got shape {kernel.shape}"
        )
    taps = kernel.reshape(_TAPS, *kernel.shape[2:])
    if keep is None:
        return taps, None
    keep = np.asarray(keep)
    if keep.shape != kernel.shape:
        raise ValueError(
            f"keep must be a boolean HWIO mask shaped like the kernel {kernel.shape}, got "
            f"{keep.shape} (patterns.projection_mask(codes, library) gives one)"
        )
    return taps, (keep != 0).reshape(taps.shape)


def block_lengths_pattern(keep: np.ndarray) -> np.ndarray:
    """Kept taps per kernel in the pattern layout, an ``(in, out)`` int64 array (0 for removed
    kernels)."""
    keep = np.asarray(keep)
    if keep.ndim != 4 or keep.shape[:2] != (3, 3):
        raise ValueError(f"keep must be a (3, 3, in, out) HWIO mask, got shape {keep.shape}")
    return np.count_nonzero(keep, axis=(0, 1)).astype(np.int64)


def _pattern_stats(
    kernel: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    taps, kept = _pattern_taps(kernel, keep)
    lengths = kept.sum(axis=0)
    magnitudes = np.where(kept, np.abs(taps), taps.dtype.type(0))
    return taps, kept, lengths, *_block_stats(magnitudes, kept, lengths, axis=0)


def project_pattern(
    kernel: np.ndarray, keep: np.ndarray, unify: float, prune: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Unify and prune the kernels of a pattern-pruned 3x3 layer with the least squared error.

    Args:
      kernel: ``(3, 3, in, out)``, float32 or float64.
      keep: boolean HWIO mask of the taps the patterns keep (a removed kernel has none).
      unify, prune: fractions of the *eligible* kernels (those with a kept tap) to unify and to
        prune (see :func:`counts` for the rounding).

    Returns:
      ``(projected, states)``: the kernel's shape and dtype, the kept taps of unified kernels
      ``sign(w) * mean|w|`` (``sign(0) = +1``), pruned kernels 0, free kernels unchanged, and taps
      outside ``keep`` 0; states ``(in, out)`` uint8, removed kernels :data:`PRUNED`.
    """
    taps, kept, lengths, mean, unify_error, prune_error = _pattern_stats(kernel, keep)
    eligible = lengths > 0
    num_unify, num_prune = counts(int(eligible.sum()), unify, prune)
    states = np.full(lengths.shape, PRUNED, dtype=STATE_DTYPE)
    states[eligible] = choose_states(
        unify_error[eligible], prune_error[eligible], num_unify, num_prune
    )
    projected = _with_states(taps, states, mean, kept, axis=0)
    return projected.reshape(np.shape(kernel)), states


def apply_pattern(kernel: np.ndarray, keep: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Apply fixed kernel states (``(in, out)``): the kept taps of unified kernels take their mean
    ``|w|`` with their own signs (``sign(0) = +1``), pruned kernels become 0, free kernels keep
    their kept taps; taps outside ``keep`` become 0."""
    taps, kept, _, mean, _, _ = _pattern_stats(kernel, keep)
    states = _check_states(states, mean.shape, "apply_pattern")
    return _with_states(taps, states, mean, kept, axis=0).reshape(np.shape(kernel))


def read_pattern_states(kernel: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Read the kernel states of a 3x3 layer off its weights, shape ``(in, out)``.

    With ``keep`` the block is the kept taps, as in :func:`read_dense_states`: :data:`PRUNED` when
    they are all 0 (or there are none), :data:`UNIFIED` when their magnitudes are all equal
    (bitwise) and non-zero, :data:`FREE` otherwise; taps outside ``keep`` are not looked at.

    Without ``keep`` the block is unknown and the non-zero taps stand for it: :data:`PRUNED` for
    an all-zero kernel, :data:`UNIFIED` when at least two taps are non-zero and share one
    magnitude, :data:`FREE` otherwise. One non-zero tap is read as free: it stores one value either
    way, and a unified kernel has every kept tap non-zero (``sign(0) = +1``), so a lone non-zero
    tap in a 4-tap pattern is not one (applying unification would spread it over the pattern).
    This guess is right for the output of :func:`project_pattern` whenever every pattern keeps at
    least two taps (PCONV patterns keep four); pass ``keep`` otherwise.
    """
    taps, kept = _pattern_taps(kernel, keep)
    magnitudes = np.abs(taps)
    if kept is not None:
        return _read_states(np.where(kept, magnitudes, 0), kept, axis=0)
    nonzero = magnitudes != 0
    states = _read_states(magnitudes, nonzero, axis=0)
    lone = (states == UNIFIED) & (nonzero.sum(axis=0) < 2)
    return np.where(lone, FREE, states).astype(STATE_DTYPE)


# ----------------------------------------------------------------------------------------------
# Summaries


def stored_values(states: np.ndarray, block_lengths: np.ndarray) -> int:
    """How many float values the representation stores: a free block its ``n`` weights, a unified
    block 1, a pruned block 0 (sign bits of unified blocks are not counted)."""
    states = np.asarray(states)
    block_lengths = np.asarray(block_lengths)
    if states.shape != block_lengths.shape:
        raise ValueError(
            f"stored_values: states {states.shape} and block_lengths {block_lengths.shape} must "
            "have the same shape"
        )
    free = int(block_lengths[states == FREE].sum())
    return free + int(np.count_nonzero((states == UNIFIED) & (block_lengths > 0)))


#: Block sizes the delegate's kernels read best, largest first.
ENGINE_BLOCK_SIZES = (16, 8, 4)


def packed_bytes(states: np.ndarray, block_lengths: np.ndarray) -> int:
    """Bytes of a compressed representation: a free block its ``n`` float32 weights, a unified
    block one float32 magnitude plus ``n`` sign bits (whole bytes), a pruned block nothing, and 2
    bits of state per block (what the delegate's kernels read)."""
    states = np.asarray(states)
    block_lengths = np.asarray(block_lengths)
    free = 4 * int(block_lengths[states == FREE].sum())
    unified = block_lengths[states == UNIFIED]
    return free + int((4 + (unified + 7) // 8).sum()) + (2 * states.size + 7) // 8


def best_dense_states(
    kernel: np.ndarray, block_sizes: tuple[int, ...] = ENGINE_BLOCK_SIZES
) -> tuple[int, np.ndarray, int]:
    """The block size (of ``block_sizes``) whose states, read off the weights, pack smallest.

    For a kernel trained with one block size the others read mostly as free, so this recovers
    the size it was trained with. Returns ``(block_size, states, packed_bytes)``; ties go to the
    larger block.
    """
    matrix = _dense_matrix(kernel)
    best = None
    for block_size in block_sizes:
        states = read_dense_states(matrix, block_size)
        size = packed_bytes(
            states, block_lengths_dense(matrix.shape[0], matrix.shape[1], block_size)
        )
        if best is None or size < best[2]:
            best = (block_size, states, size)
    return best
