"""Semi-structured activation sparsity: spatial masks over a convolution's output (NumPy only).

Following Grimaldi et al. (arXiv 2309.06626), a convolution's output positions are masked by a
spatial 0/1 mask that all its channels share. Our masks are semi-structured for the engine: the
mask's *unit* is a run of ``unit`` consecutive output pixels along one row, masked as a whole.
Row ``y`` of a layer ``width`` pixels wide has ``ceil(width / unit)`` units; unit ``u`` covers
columns ``[unit * u, min(unit * u + unit, width))`` (a row's last unit may be shorter). Units are
numbered row-major: unit ``u`` of row ``y`` has id ``y * ceil(width / unit) + u``.

All layers of a model take their masks from one random *score map* at the input resolution,
average-pooled to each layer's output size (:func:`layer_scores`), so the masked regions of layers
at different resolutions stay aligned; each layer masks its lowest-scoring units
(:func:`unit_mask`).

Example::

    rng = np.random.default_rng(0)
    scores = random_score_map(rng, 32, 32)                    # at the model's input size
    mask = layer_mask(scores, 16, 16, sparsity=0.25, unit=16)  # a layer at half resolution
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

__all__ = [
    "check_mask",
    "check_sparsity",
    "check_unit",
    "describe_mask",
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


def check_unit(unit: object) -> int:
    """``unit`` as an int; raises a ValueError unless it is a positive integer."""
    return _positive_int(unit, "unit")


def check_sparsity(sparsity: object) -> float:
    """``sparsity`` as a float; raises a ValueError naming it unless it is in [0, 1)."""
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, Real)
        or not 0.0 <= float(sparsity) < 1.0
    ):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def units_per_row(width: int, unit: int) -> int:
    """Units in one row ``width`` pixels wide: ``ceil(width / unit)``."""
    return -(-_positive_int(width, "width") // check_unit(unit))


def unit_count(height: int, width: int, unit: int) -> int:
    """Units of a ``height`` x ``width`` layer: ``height * ceil(width / unit)``."""
    return _positive_int(height, "height") * units_per_row(width, unit)


def unit_index(height: int, width: int, unit: int) -> np.ndarray:
    """Each pixel's unit id, shape ``(height, width)``, int64; units are numbered row-major."""
    per_row = units_per_row(width, unit)
    rows = np.arange(_positive_int(height, "height"), dtype=np.int64)[:, None]
    columns = np.arange(width, dtype=np.int64)[None, :] // unit
    return rows * per_row + columns


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


def unit_scores(scores: np.ndarray, unit: int) -> np.ndarray:
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


def unit_mask(scores: np.ndarray, sparsity: float, unit: int) -> np.ndarray:
    """The 0/1 mask zeroing the lowest-scoring units of a layer.

    Args:
      scores: (height, width) scores of the layer's output positions (see :func:`layer_scores`).
      sparsity: the fraction of units to mask, in [0, 1).
      unit: pixels per unit along a row.

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
    score_map: np.ndarray, height: int, width: int, sparsity: float, unit: int
) -> np.ndarray:
    """A layer's mask from the model's score map: :func:`unit_mask` of :func:`layer_scores`."""
    return unit_mask(layer_scores(score_map, height, width), sparsity, unit)


def random_score_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (height, width) score map, uniform in [0, 1), float32."""
    shape = (_positive_int(height, "height"), _positive_int(width, "width"))
    return rng.random(shape, dtype=np.float32)


def _unit_values(mask: np.ndarray, unit: int) -> tuple[np.ndarray, np.ndarray]:
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


def masked_unit_fraction(mask: np.ndarray, unit: int) -> float:
    """The fraction of the mask's units that are all zero."""
    low, high = _unit_values(mask, unit)
    return float(np.mean((low == 0.0) & (high == 0.0)))


def is_unit_structured(mask: np.ndarray, unit: int) -> bool:
    """Whether every unit of the mask is constant (all its pixels 0, or all 1)."""
    low, high = _unit_values(mask, unit)
    return bool(np.all(low == high))


def check_mask(mask: np.ndarray, shape: tuple[int, int], unit: int, what: str = "mask") -> None:
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
        per_row = units_per_row(values.shape[1], unit)
        low, high = _unit_values(values, unit)
        first = int(np.flatnonzero(low != high)[0])
        row, column = divmod(first, per_row)
        raise ValueError(
            f"{what}: unit {first} (row {row}, columns {column * unit}.."
            f"{min(column * unit + unit, values.shape[1]) - 1}) is partly masked; a unit of "
            f"{unit} pixels is masked as a whole"
        )


def describe_mask(mask: np.ndarray, unit: int) -> str:
    """A one-line summary: size, units, masked units."""
    values = np.asarray(mask)
    low, high = _unit_values(values, unit)
    masked = int(np.sum((low == 0.0) & (high == 0.0)))
    return (
        f"{values.shape[0]}x{values.shape[1]} mask, {len(low)} units of {unit} px, "
        f"{masked} masked ({masked / len(low):.1%})"
    )
