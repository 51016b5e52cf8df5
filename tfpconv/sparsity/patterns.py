"""Pattern and connectivity pruning math for 3x3 convolution kernels (NumPy only).

Kernels are Keras' HWIO arrays of shape ``(3, 3, in_channels, out_channels)``. A *pattern* is a 3x3
mask with exactly four entries, the centre always among them: there are 56 candidates
(``CANDIDATE_MASKS``). A model uses a small *library* of them, and every kernel keeps the weights of
one library pattern (pattern pruning) or is removed whole (connectivity pruning).

A pattern is always a *mask*: a 9-bit integer, bit ``3 * row + col`` set where the kernel keeps
its weight (``0b000111010``; :func:`format_mask` draws it, :func:`mask_taps` gives the booleans).
Libraries are sequences of masks, everywhere: here, in the callbacks and in the plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

KERNEL_SIZE = 3
TAPS = KERNEL_SIZE * KERNEL_SIZE
CENTRE = TAPS // 2
WEIGHTS_PER_PATTERN = 4

#: Code of a kernel that is removed whole (all nine weights zero).
PRUNED = -1
#: Code of a kernel whose non-zeros fit no 4-entry, centre-including pattern.
NOT_A_PATTERN = -2


def _candidate_taps() -> np.ndarray:
    others = [tap for tap in range(TAPS) if tap != CENTRE]
    rows = []
    for chosen in itertools.combinations(others, WEIGHTS_PER_PATTERN - 1):
        taps = np.zeros(TAPS, dtype=bool)
        taps[[CENTRE, *chosen]] = True
        rows.append(taps)
    return np.stack(rows)


# The candidates as boolean taps, shape (56, 9); internal: the public form is the mask.
_CANDIDATE_TAPS: np.ndarray = _candidate_taps()
_CANDIDATE_TAPS.setflags(write=False)
NUM_CANDIDATES = len(_CANDIDATE_TAPS)
#: All 56 candidate patterns as 9-bit masks, in a fixed order (ties between patterns go to the
#: earlier one).
CANDIDATE_MASKS: np.ndarray = _CANDIDATE_TAPS.astype(np.int64) @ (1 << np.arange(TAPS))
CANDIDATE_MASKS.setflags(write=False)
# Position of every 9-bit value among the candidates, -1 for values that are not a pattern.
_CANDIDATE_POSITION = np.full(1 << TAPS, -1, dtype=np.int64)
_CANDIDATE_POSITION[CANDIDATE_MASKS] = np.arange(NUM_CANDIDATES)


def mask_from_taps(taps: np.ndarray) -> int:
    """A 3x3 (or flat 9) boolean array as a mask, bit ``3 * row + col``."""
    flat = np.asarray(taps, dtype=bool).reshape(TAPS)
    return int(np.sum(flat.astype(np.int64) << np.arange(TAPS)))


def mask_taps(mask: int) -> np.ndarray:
    """The inverse of :func:`mask_from_taps`: a flat boolean array of the 9 taps."""
    if not 0 <= mask < (1 << TAPS):
        raise ValueError(f"a 3x3 mask has 9 bits; got {mask}")
    return ((mask >> np.arange(TAPS)) & 1).astype(bool)


def format_mask(mask: int) -> str:
    """A mask drawn as three rows of ``x`` (kept) and ``.`` (zero), separated by ``/``."""
    flat = mask_taps(mask)
    return "/".join(
        "".join("x" if flat[3 * r + c] else "." for c in range(KERNEL_SIZE))
        for r in range(KERNEL_SIZE)
    )


def check_kernel(kernel: np.ndarray, name: str = "kernel") -> np.ndarray:
    """Validate a 3x3 HWIO kernel and return it as a float array."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (KERNEL_SIZE, KERNEL_SIZE):
        raise ValueError(
            f"{name}: expected a 3x3 HWIO kernel of shape (3, 3, in, out), got {kernel.shape}"
        )
    if not np.issubdtype(kernel.dtype, np.floating):
        kernel = kernel.astype(np.float32)
    return kernel


def _taps_by_kernel(kernel: np.ndarray) -> np.ndarray:
    """(3, 3, I, O) -> (I, O, 9): each kernel's taps in row-major order."""
    return np.moveaxis(kernel.reshape(TAPS, *kernel.shape[2:]), 0, -1)


def _top4_positions(kernel: np.ndarray) -> np.ndarray:
    energy = _taps_by_kernel(check_kernel(kernel).astype(np.float64) ** 2)
    # The centre is always kept, so the choice is the 3 strongest of the 8 other taps: score each
    # candidate by the energy it keeps and take the best (ties go to the earlier candidate).
    scores = energy @ _CANDIDATE_TAPS.T.astype(np.float64)
    return np.argmax(scores, axis=-1)


def top4_masks(kernel: np.ndarray) -> np.ndarray:
    """Per kernel, its top-4-magnitude mask with the centre forced in: an ``(in, out)`` array."""
    return CANDIDATE_MASKS[_top4_positions(kernel)]


def select_library(kernels: Sequence[np.ndarray], num_patterns: int = 8) -> np.ndarray:
    """Choose the ``num_patterns`` most frequent top-4 masks over all given kernels.

    Args:
      kernels: 3x3 HWIO kernels (one per layer); every kernel with a non-zero weight votes.
        All-zero kernels (removed by connectivity pruning) have no top-4 mask and do not vote, so
        the library of an already projected model is the library it was projected with.
      num_patterns: the library size K, 1..56.

    Returns:
      The library as masks, most frequent first. Ties (and candidates no kernel voted for, when
      fewer than K distinct masks occur) are ordered by the total energy they would keep, then by
      their order in :data:`CANDIDATE_MASKS`; so when every kernel is all zero the library is the
      first K candidates.
    """
    check_num_patterns(num_patterns)
    if len(kernels) == 0:
        raise ValueError("select_library needs at least one 3x3 kernel")
    counts = np.zeros(NUM_CANDIDATES, dtype=np.int64)
    kept_energy = np.zeros(NUM_CANDIDATES, dtype=np.float64)
    for kernel in kernels:
        energy = _taps_by_kernel(check_kernel(kernel).astype(np.float64) ** 2).reshape(-1, TAPS)
        has_weights = energy.sum(axis=-1) > 0
        votes = _top4_positions(kernel).ravel()[has_weights]
        counts += np.bincount(votes, minlength=NUM_CANDIDATES)
        kept_energy += energy.sum(axis=0) @ _CANDIDATE_TAPS.T.astype(np.float64)
    order = np.lexsort((np.arange(NUM_CANDIDATES), -kept_energy, -counts))
    return CANDIDATE_MASKS[order[:num_patterns]].copy()


def check_num_patterns(num_patterns: int) -> None:
    """Raise a ValueError unless ``num_patterns`` is an integer in 1..56."""
    if isinstance(num_patterns, bool) or not isinstance(num_patterns, (int, np.integer)):
        raise ValueError(f"num_patterns must be an integer in 1..56, got {num_patterns!r}")
    if not 1 <= num_patterns <= NUM_CANDIDATES:
        raise ValueError(
            f"num_patterns must be in 1..{NUM_CANDIDATES} (there are {NUM_CANDIDATES} 4-entry "
            f"3x3 patterns that include the centre), got {num_patterns}"
        )


def check_connectivity(connectivity: float) -> None:
    """Raise a ValueError unless ``connectivity`` is a fraction in [0, 1)."""
    try:
        value = float(connectivity)
    except (TypeError, ValueError):
        raise ValueError(
            f"connectivity must be a fraction in [0, 1), got {connectivity!r}"
        ) from None
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"connectivity must be in [0, 1) (the fraction of 3x3 kernels removed per layer), "
            f"got {connectivity!r}"
        )


def check_library(library: Sequence[int]) -> np.ndarray:
    """Validate a pattern library given as masks; returns it as an int64 array of masks."""
    library = np.asarray(library)
    if library.ndim != 1 or len(library) == 0:
        raise ValueError(f"a pattern library is a non-empty list of 9-bit masks, got {library}")
    if not np.issubdtype(library.dtype, np.integer):
        raise ValueError(f"pattern library entries must be 9-bit integer masks, got {library}")
    library = library.astype(np.int64)
    in_range = (library >= 0) & (library < (1 << TAPS))
    bad = [int(m) for m, ok in zip(library, in_range, strict=True) if not ok]
    bad += [int(m) for m in library[in_range] if _CANDIDATE_POSITION[m] < 0]
    if bad:
        raise ValueError(
            f"pattern library entry {bad[0]} ({bad[0]:#011b}) is not a 3x3 pattern: a mask "
            "keeps exactly 4 taps, the centre (bit 4) among them"
        )
    if len(np.unique(library)) != len(library):
        raise ValueError(f"pattern library has repeated masks: {library.tolist()}")
    return library


def _library_taps(library: Sequence[int]) -> np.ndarray:
    return _CANDIDATE_TAPS[_CANDIDATE_POSITION[check_library(library)]]


def check_filter_group(filter_group: int) -> None:
    """Raise a ValueError unless ``filter_group`` is a positive integer."""
    if isinstance(filter_group, bool) or not isinstance(filter_group, (int, np.integer)):
        raise ValueError(f"filter_group must be a positive integer, got {filter_group!r}")
    if filter_group < 1:
        raise ValueError(
            f"filter_group must be >= 1 (1: every filter chooses its own kernels' patterns), "
            f"got {filter_group}"
        )


def _group_sums(values: np.ndarray, filter_group: int) -> np.ndarray:
    """Sums over consecutive groups of ``filter_group`` along axis 1 (the last group may be
    shorter): ``(in, out, ...)`` -> ``(in, ceil(out / filter_group), ...)``."""
    starts = np.arange(0, values.shape[1], filter_group)
    return np.add.reduceat(values, starts, axis=1)


def _per_filter(values: np.ndarray, out_channels: int, filter_group: int) -> np.ndarray:
    """The inverse of :func:`_group_sums`' shape: each group's value repeated for its filters."""
    return np.repeat(values, filter_group, axis=1)[:, :out_channels]


def _pattern_choice(
    kernel: np.ndarray, library: Sequence[int], filter_group: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per kernel, the library pattern that keeps the most energy.

    Works on the HWIO kernel as ``(9, in * out)`` (its own memory order, no transpose). Returns
    the library's taps ``(patterns, 9)``, the choice ``(in, out)`` and the squared norm each kernel
    keeps with its choice ``(in, out)``, summed over its group with ``filter_group`` > 1.
    """
    masks = _library_taps(library)
    in_channels, out_channels = kernel.shape[2:]
    energy = np.square(kernel.reshape(TAPS, -1), dtype=np.float64)
    scores = (energy.T @ masks.T.astype(np.float64)).reshape(in_channels, out_channels, -1)
    if filter_group > 1:
        scores = _group_sums(scores, filter_group)
    choice = np.argmax(scores, axis=-1)
    kept = np.take_along_axis(scores, choice[..., np.newaxis], axis=-1)[..., 0]
    if filter_group > 1:
        choice = _per_filter(choice, out_channels, filter_group)
    return masks, choice, kept


def _tap_mask(masks: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The kept taps that ``codes`` describe, as ``(9, in * out)`` (the HWIO kernel's own memory
    order): each kernel's pattern from ``masks`` ``(patterns, 9)``, nothing for negative codes."""
    codes = np.asarray(codes).ravel()
    return masks.T[:, np.maximum(codes, 0)] & (codes >= 0)


def _apply(kernel: np.ndarray, masks: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``kernel`` with each kernel's taps outside its pattern zeroed, and kernels coded
    :data:`PRUNED` zeroed whole."""
    zero = np.zeros((), kernel.dtype)
    return np.where(_tap_mask(masks, codes), kernel.reshape(TAPS, -1), zero).reshape(kernel.shape)


def project_patterns(
    kernel: np.ndarray, library: Sequence[int], filter_group: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Project every 3x3 kernel onto the library pattern that keeps the largest squared norm.

    With ``filter_group`` g > 1, the kernels of g consecutive filters (output channels) on one
    input channel take one pattern together, the one that keeps the largest squared norm of the
    g kernels.

    Returns ``(projected, choice)``: the projected HWIO kernel (same dtype) and, per ``(in, out)``
    kernel, the position in ``library`` of the chosen pattern (ties go to the earlier one).
    """
    kernel = check_kernel(kernel)
    check_filter_group(filter_group)
    masks, choice, _ = _pattern_choice(kernel, library, filter_group)
    return _apply(kernel, masks, choice), choice


def num_to_prune(num_kernels: int, connectivity: float) -> int:
    """How many of ``num_kernels`` kernels a connectivity fraction removes (nearest integer)."""
    check_connectivity(connectivity)
    return min(num_kernels, int(np.floor(connectivity * num_kernels + 0.5)))


def kernel_norms(kernel: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every 3x3 kernel, shape ``(in, out)``."""
    return (check_kernel(kernel).astype(np.float64) ** 2).sum(axis=(0, 1))


def _weakest(norms: np.ndarray, count: int) -> np.ndarray:
    """A boolean mask of the ``count`` smallest entries of ``norms``; among equal values the
    earlier ones (row-major) go first, as a stable sort would order them. Linear time."""
    flat = norms.ravel()
    chosen = np.zeros(flat.size, dtype=bool)
    if count >= flat.size:
        chosen[:] = True
    elif count > 0:
        threshold = np.partition(flat, count - 1)[count - 1]
        if np.isnan(threshold):  # NaN sorts last: every number goes, then the first NaNs
            chosen, ties = ~np.isnan(flat), np.flatnonzero(np.isnan(flat))
        else:
            chosen, ties = flat < threshold, np.flatnonzero(flat == threshold)
        chosen[ties[: count - int(chosen.sum())]] = True
    return chosen.reshape(norms.shape)


def _connectivity_keep(
    norms: np.ndarray, connectivity: float, out_channels: int, filter_group: int
) -> np.ndarray:
    """Which kernels survive, from the (group-summed, with ``filter_group`` > 1) norms."""
    keep = ~_weakest(norms, num_to_prune(norms.size, connectivity))
    return _per_filter(keep, out_channels, filter_group) if filter_group > 1 else keep


def connectivity_mask(kernel: np.ndarray, connectivity: float, filter_group: int = 1) -> np.ndarray:
    """Which kernels survive removing the ``connectivity`` fraction with the smallest norms.

    Returns a boolean ``(in, out)`` array with exactly ``num_to_prune(in * out, connectivity)``
    False entries; among equal norms the earlier kernel (row-major ``(in, out)``) goes first. With
    ``filter_group`` g > 1 the kernels of g consecutive filters on one input channel are kept or
    removed together, by their summed norm: ``num_to_prune`` of the groups are removed.
    """
    check_filter_group(filter_group)
    norms = kernel_norms(kernel)
    if filter_group > 1:
        norms = _group_sums(norms, filter_group)
    return _connectivity_keep(norms, connectivity, kernel.shape[3], filter_group)


def project(
    kernel: np.ndarray, library: Sequence[int], connectivity: float = 0.0, filter_group: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Pattern projection, then connectivity projection by post-pattern norm.

    ``filter_group`` g > 1 ties the kernels of g consecutive filters on each input channel: they
    share one pattern and are kept or removed together (see :func:`project_patterns`), so the
    delegate loads each input vector once for all g filters.

    Returns ``(projected, codes)`` where ``codes`` has shape ``(in, out)`` and holds, per kernel,
    the position of its pattern in ``library`` or :data:`PRUNED`.
    """
    kernel = check_kernel(kernel)
    check_filter_group(filter_group)
    check_connectivity(connectivity)
    # The energy a kernel keeps with its pattern is its post-pattern norm: no second pass.
    masks, choice, kept = _pattern_choice(kernel, library, filter_group)
    keep = _connectivity_keep(kept, connectivity, kernel.shape[3], filter_group)
    codes = np.where(keep, choice, PRUNED)
    return _apply(kernel, masks, codes), codes


def projection_mask(codes: np.ndarray, library: Sequence[int]) -> np.ndarray:
    """The HWIO 0/1 mask that :func:`project` codes describe."""
    codes = np.asarray(codes)
    return _tap_mask(_library_taps(library), codes).reshape(KERNEL_SIZE, KERNEL_SIZE, *codes.shape)


def classify_kernels(kernel: np.ndarray) -> np.ndarray:
    """Read each kernel's pattern off its zero structure.

    Returns an ``(in, out)`` array holding the mask for kernels whose non-zeros fit a 4-entry
    centre pattern, :data:`PRUNED` for all-zero kernels and :data:`NOT_A_PATTERN` for the rest. A
    kernel with fewer than four non-zeros fits several candidates; it gets the one used most by the
    unambiguous kernels of the same layer (then the earlier candidate).
    """
    taps = _taps_by_kernel(check_kernel(kernel)) != 0
    support = taps.astype(np.int64) @ (1 << np.arange(TAPS))
    fits = (support[..., np.newaxis] & ~CANDIDATE_MASKS) == 0  # (I, O, 56)
    num_fits = fits.sum(axis=-1)
    exact = num_fits == 1
    popularity = fits[exact].sum(axis=0) if exact.any() else np.zeros(NUM_CANDIDATES, np.int64)
    # Most popular fitting candidate; lower index wins ties.
    rank = np.where(
        fits, popularity * NUM_CANDIDATES + (NUM_CANDIDATES - 1 - np.arange(NUM_CANDIDATES)), -1
    )
    masks = CANDIDATE_MASKS[np.argmax(rank, axis=-1)]
    masks = np.where(num_fits == 0, NOT_A_PATTERN, masks)
    return np.where(support == 0, PRUNED, masks)


def library_by_use(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The library a layer's kernels use, and each kernel's position in it.

    Args:
      classes: what :func:`classify_kernels` returns (masks or :data:`PRUNED`; no
        :data:`NOT_A_PATTERN`).

    Returns:
      ``(library, codes)``: the masks used, most used first (ties: candidate order), and per
      kernel its position in ``library`` or :data:`PRUNED`, shaped like ``classes``.
    """
    classes = np.asarray(classes)
    if np.any(classes == NOT_A_PATTERN):
        raise ValueError("library_by_use needs pattern-pruned kernels (NOT_A_PATTERN found)")
    used = _CANDIDATE_POSITION[classes[classes >= 0]]
    counts = np.bincount(used, minlength=NUM_CANDIDATES)
    ranked = [int(c) for c in np.lexsort((np.arange(NUM_CANDIDATES), -counts)) if counts[c]]
    position = np.full(NUM_CANDIDATES, PRUNED, dtype=np.int64)
    position[ranked] = np.arange(len(ranked))
    codes = np.where(classes >= 0, position[_CANDIDATE_POSITION[np.maximum(classes, 0)]], PRUNED)
    return CANDIDATE_MASKS[ranked].copy(), codes
