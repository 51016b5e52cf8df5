"""Filter kernel reorder: the order and groups in which a pattern convolution's filters run."""

from __future__ import annotations

import numpy as np

from tfpconv.sparsity import patterns

#: Nominal number of filters per group of the filter kernel reorder.
DEFAULT_FILTER_GROUP_SIZE = 16
#: Group boundaries fall on multiples of this many filters (SIMD/thread granularity).
FILTER_ALIGN = 8


def reorder_filters(
    codes: np.ndarray,
    group_size: int = DEFAULT_FILTER_GROUP_SIZE,
    align: int = FILTER_ALIGN,
) -> tuple[list[int], list[int]]:
    """Filter kernel reorder: the order in which output channels run, and its groups.

    Heuristic (deterministic):

    1. Filters are sorted by their number of kept (non-pruned) kernels, most first, so filters
       next to each other do about the same work.
    2. Within each run of equal count, filters are chained greedily by similarity of their code
       sequences: start from the lexicographically smallest sequence, then repeatedly append the
       remaining filter whose codes agree with the last one at the most input channels (ties: the
       lexicographically smaller sequence, then the lower channel). Neighbours thus tend to share
       patterns *and* pruned inputs, so they share input loads and branch the same way.
    3. The order is cut into ``ceil(out / group_size)`` groups (at most one per ``align``
       filters) of about equal work, each cut on a multiple of ``align`` filters (the last group
       takes the remainder). Work of a filter = 4 x kept kernels + 1, the 1 standing for its bias,
       activation and store, so a fully pruned layer is still split evenly.

    Args:
      codes: ``(out, in)`` integer codes (library position, or -1 for pruned).
      group_size: nominal filters per group (>= 1).
      align: group boundaries fall on multiples of this many filters (>= 1).

    Returns:
      ``(filter_order, group_offsets)`` with ``group_offsets`` rising from 0 to ``out``.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes must have shape (out, in) with out >= 1, got {codes.shape}")
    if group_size < 1 or align < 1:
        raise ValueError(f"group_size and align must be >= 1, got {group_size}, {align}")
    out_channels = codes.shape[0]
    kept = np.count_nonzero(codes != patterns.PRUNED, axis=1)

    # Rank of every filter's code sequence in lexicographic order (then channel).
    lex_rank = np.empty(out_channels, dtype=np.int64)
    lex_rank[np.lexsort((np.arange(out_channels), *codes.T[::-1]))] = np.arange(out_channels)

    order: list[int] = []
    for count in sorted(set(kept.tolist()), reverse=True):
        members = np.flatnonzero(kept == count)
        order.extend(_chain_by_similarity(codes[members], lex_rank[members], members))

    work = kept[order] * patterns.WEIGHTS_PER_PATTERN + 1
    return order, _balanced_cuts(work, group_size, align)


def _chain_by_similarity(codes: np.ndarray, lex_rank: np.ndarray, members: np.ndarray) -> list[int]:
    """Greedy nearest-neighbour chain of filters by the number of equal codes."""
    n = len(members)
    if n <= 2:
        return members[np.argsort(lex_rank)].tolist()
    similarity = np.zeros((n, n), dtype=np.float64)
    for value in np.unique(codes):
        hits = (codes == value).astype(np.float32)
        similarity += hits @ hits.T
    # Tie-break: prefer the lexicographically smaller sequence (rank is unique).
    score = similarity * (n + 1) - (np.argsort(np.argsort(lex_rank)))[np.newaxis, :]
    remaining = np.ones(n, dtype=bool)
    current = int(np.argmin(lex_rank))
    chain = [current]
    remaining[current] = False
    for _ in range(n - 1):
        candidates = np.where(remaining, score[current], -np.inf)
        current = int(np.argmax(candidates))
        chain.append(current)
        remaining[current] = False
    return members[chain].tolist()


def _balanced_cuts(work: np.ndarray, group_size: int, align: int) -> list[int]:
    """Group offsets over units of ``align`` filters with about equal total work per group."""
    out_channels = len(work)
    unit_starts = list(range(0, out_channels, align))
    unit_work = np.add.reduceat(work.astype(np.float64), unit_starts)
    num_units = len(unit_starts)
    num_groups = min(num_units, max(1, -(-out_channels // group_size)))
    cumulative = np.concatenate([[0.0], np.cumsum(unit_work)])  # before unit k
    total = cumulative[-1]
    cuts = [0]
    for g in range(1, num_groups):
        lowest = cuts[-1] + 1
        highest = num_units - (num_groups - g)
        target = total * g / num_groups
        choices = np.arange(lowest, highest + 1)
        best = choices[np.argmin(np.abs(cumulative[choices] - target))]
        cuts.append(int(best))
    offsets = [unit_starts[k] for k in cuts] + [out_channels]
    return offsets
