"""Semi-structured activation sparsity: spatial masks over a convolution's output (NumPy only).

Following Grimaldi et al. (arXiv 2309.06626), a convolution's output positions are masked by a
spatial 0/1 mask that all its channels share. Our masks are semi-structured for the engine: the
mask's *unit* ``(rows, pixels)`` is a block of ``rows`` output rows x ``pixels`` columns, masked as
a whole -- the output pixels the engine's kernels compute together. Units lie on a grid from pixel
(0, 0): band ``b`` covers rows ``[rows * b, min(rows * b + rows, height))`` and unit ``u`` of a band
columns ``[pixels * u, min(pixels * u + pixels, width))`` (units at the bottom and right edges may
be smaller). Units are numbered row-major: unit ``u`` of band ``b`` has id
``b * ceil(width / pixels) + u``. A plain int ``n`` as a unit means ``(1, n)``: runs of ``n``
pixels along one row.

All layers of a model take their masks from one random *score map* at the input resolution,
average-pooled to each layer's output size (:func:`layer_scores`), so the masked regions of layers
at different resolutions stay aligned; each layer masks its lowest-scoring units
(:func:`unit_mask`).

Example::

    rng = np.random.default_rng(0)
    scores = random_score_map(rng, 32, 32)                    # at the model's input size
    mask = layer_mask(scores, 16, 16, sparsity=0.25, unit=(8, 16))  # a layer at half resolution
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

__all__ = [
    "check_mask",
    "check_sparsity",
    "Unit",
    "check_unit",
    "describe_mask",
    "describe_unit",
    "is_unit_structured",
    "layer_mask",
    "layer_scores",
    "masked_unit_count",
    "masked_unit_fraction",
    "random_score_map",
    "unit_count",
    "unit_index",
    "unit_mask",
    "unit_scores",
    "units_per_row",
]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


Unit = tuple[int, int]


def check_unit(unit: object) -> Unit:
    """``unit`` as ``(rows, pixels)``; an int ``n`` is ``(1, n)``.

    Raises a ValueError unless it is a positive integer or a pair of them.
    """
    if isinstance(unit, Integral) and not isinstance(unit, bool):
        return (1, _positive_int(unit, "unit"))
    if isinstance(unit, (tuple, list)) and len(unit) == 2:
        rows, pixels = unit
        if all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in unit):
            return (int(rows), int(pixels))
    raise ValueError(
        f"unit must be a positive integer (pixels along a row) or a pair (rows, pixels) of "
        f"them, got {unit!r}"
    )


def describe_unit(unit: object) -> str:
    """``"8x16 px"`` for unit ``(8, 16)`` (rows x pixels)."""
    rows, pixels = check_unit(unit)
    return f"{rows}x{pixels} px"


def check_sparsity(sparsity: object) -> float:
    """``sparsity`` as a float; raises a ValueError naming it unless it is in [0, 1)."""
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, Real)
        or not 0.0 <= float(sparsity) < 1.0
    ):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def units_per_row(width: int, unit: object) -> int:
    """Units across a layer ``width`` pixels wide: ``ceil(width / pixels)``."""
    return -(-_positive_int(width, "width") // check_unit(unit)[1])


def unit_count(height: int, width: int, unit: object) -> int:
    """Units of a ``height`` x ``width`` layer: ``ceil(height / rows) * ceil(width / pixels)``."""
    bands = -(-_positive_int(height, "height") // check_unit(unit)[0])
    return bands * units_per_row(width, unit)


def unit_index(height: int, width: int, unit: object) -> np.ndarray:
    """Each pixel's unit id, shape ``(height, width)``, int64; units are numbered row-major."""
    unit_rows, pixels = check_unit(unit)
    per_row = units_per_row(width, unit)
    bands = np.arange(_positive_int(height, "height"), dtype=np.int64)[:, None] // unit_rows
    columns = np.arange(width, dtype=np.int64)[None, :] // pixels
    return bands * per_row + columns


def _pooling_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) weights of adaptive average pooling along one axis.

    Output cell ``i`` averages source cells ``floor(i * source / target)`` up to (excluding)
    ``ceil((i + 1) * source / target)``; at least one cell, so upsampling repeats cells.
    """
    weights = np.zeros((target, source), dtype=np.float64)
    for i in range(target):
        start = (i * source) // target
        end = -(-((i + 1) * source) // target)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def layer_scores(score_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """The score map average-pooled to a layer's output size (adaptive average pooling).

    Args:
      score_map: the (H0, W0) scores at the model's input resolution.
      height, width: the layer's output size; any size, larger than the map's too.

    Returns:
      float64 array (height, width): cell (i, j) is the mean of the map's rows
      ``floor(i * H0 / height) .. ceil((i + 1) * H0 / height) - 1`` and the matching columns.
    """
    scores = np.asarray(score_map, dtype=np.float64)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"score_map must be a non-empty 2-D array, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("score_map holds NaN or infinite values")
    rows = _pooling_matrix(scores.shape[0], _positive_int(height, "height"))
    columns = _pooling_matrix(scores.shape[1], _positive_int(width, "width"))
    return rows @ scores @ columns.T


def unit_scores(scores: np.ndarray, unit: object) -> np.ndarray:
    """The mean score of every unit's pixels, by unit id (float64, length :func:`unit_count`)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"scores must be a non-empty 2-D array, got shape {values.shape}")
    ids = unit_index(values.shape[0], values.shape[1], unit).ravel()
    sums = np.bincount(ids, weights=values.ravel())
    return sums / np.bincount(ids)


def masked_unit_count(n_units: int, sparsity: float) -> int:
    """How many of ``n_units`` units a mask of ``sparsity`` zeroes: ``round(sparsity * n_units)``.

    Python's ``round`` (half to even), so 2.5 units give 2 and 3.5 give 4.
    """
    return round(check_sparsity(sparsity) * _positive_int(n_units, "n_units"))


def unit_mask(scores: np.ndarray, sparsity: float, unit: object) -> np.ndarray:
    """The 0/1 mask zeroing the lowest-scoring units of a layer.

    Args:
      scores: (height, width) scores of the layer's output positions (see :func:`layer_scores`).
      sparsity: the fraction of units to mask, in [0, 1).
      unit: ``(rows, pixels)`` of a unit (see :func:`check_unit`).

    Returns:
      float32 array (height, width) of 0/1: exactly :func:`masked_unit_count` units are 0, those
      with the lowest mean score (ties go to the lower unit id, so the result is deterministic).

    Raises:
      ValueError: ``sparsity`` outside [0, 1) (the message names it), a bad ``unit`` or ``scores``.
    """
    sparsity = check_sparsity(sparsity)
    means = unit_scores(scores, unit)
    if not np.all(np.isfinite(means)):
        raise ValueError("scores hold NaN or infinite values")
    height, width = np.shape(scores)
    order = np.lexsort((np.arange(len(means)), means))  # by score, then by unit id
    keep = np.ones(len(means), dtype=np.float32)
    keep[order[: masked_unit_count(len(means), sparsity)]] = 0.0
    return keep[unit_index(height, width, unit)]


def layer_mask(
    score_map: np.ndarray, height: int, width: int, sparsity: float, unit: object
) -> np.ndarray:
    """A layer's mask from the model's score map: :func:`unit_mask` of :func:`layer_scores`."""
    return unit_mask(layer_scores(score_map, height, width), sparsity, unit)


def random_score_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (height, width) score map, uniform in [0, 1), float32."""
    shape = (_positive_int(height, "height"), _positive_int(width, "width"))
    return rng.random(shape, dtype=np.float32)


def _unit_values(mask: np.ndarray, unit: object) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: the minimum and maximum of the mask over the unit's pixels."""
    values = np.asarray(mask, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {values.shape}")
    ids = unit_index(values.shape[0], values.shape[1], unit).ravel()
    n_units = int(ids[-1]) + 1
    low = np.full(n_units, np.inf)
    high = np.full(n_units, -np.inf)
    np.minimum.at(low, ids, values.ravel())
    np.maximum.at(high, ids, values.ravel())
    return low, high


def masked_unit_fraction(mask: np.ndarray, unit: object) -> float:
    """The fraction of the mask's units that are all zero."""
    low, high = _unit_values(mask, unit)
    return float(np.mean((low == 0.0) & (high == 0.0)))


def is_unit_structured(mask: np.ndarray, unit: object) -> bool:
    """Whether every unit of the mask is constant (all its pixels 0, or all 1)."""
    low, high = _unit_values(mask, unit)
    return bool(np.all(low == high))


def check_mask(mask: np.ndarray, shape: tuple[int, int], unit: object, what: str = "mask") -> None:
    """Raise a ValueError (starting with ``what``) unless ``mask`` is a valid unit mask.

    Valid: shape ``shape``, every value 0 or 1, every unit all 0 or all 1.
    """
    values = np.asarray(mask)
    if values.shape != tuple(shape):
        raise ValueError(f"{what}: expected a mask of shape {tuple(shape)}, got {values.shape}")
    if values.dtype == bool:
        values = values.astype(np.float32)
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{what}: the mask must be numeric, got dtype {values.dtype}")
    bad = ~np.isin(values, (0, 1))
    if np.any(bad):
        y, x = np.argwhere(bad)[0]
        raise ValueError(f"{what}: mask values must be 0 or 1, got {values[y, x]!r} at ({y}, {x})")
    if not is_unit_structured(values, unit):
        unit_rows, pixels = check_unit(unit)
        per_row = units_per_row(values.shape[1], unit)
        low, high = _unit_values(values, unit)
        first = int(np.flatnonzero(low != high)[0])
        band, column = divmod(first, per_row)
        y0, x0 = band * unit_rows, column * pixels
        y1, x1 = min(y0 + unit_rows, values.shape[0]) - 1, min(x0 + pixels, values.shape[1]) - 1
        raise ValueError(
            f"{what}: unit {first} (rows {y0}..{y1}, columns {x0}..{x1}) is partly masked; a "
            f"unit of {describe_unit(unit)} is masked as a whole"
        )


def describe_mask(mask: np.ndarray, unit: object) -> str:
    """A one-line summary: size, units, masked units."""
    values = np.asarray(mask)
    low, high = _unit_values(values, unit)
    masked = int(np.sum((low == 0.0) & (high == 0.0)))
    return (
        f"{values.shape[0]}x{values.shape[1]} mask, {len(low)} units of {describe_unit(unit)}, "
        f"{masked} masked ({masked / len(low):.1%})"
    )
