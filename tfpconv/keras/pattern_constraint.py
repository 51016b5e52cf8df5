"""The pattern + connectivity constraint set (PCONV / PatDNN) for the training machinery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfpconv.keras.constraint import Constraint, SchedulePoint
from tfpconv.keras.layer_selection import LayerFilter, left_alone
from tfpconv.keras.one_shot import (
    FilterGroup,
    LayerTarget,
    check_filter_group,
    check_first_layer,
    exempt_first_layer,
    layer_connectivities,
    layer_filter_groups,
    layer_targets,
    resolve_library,
)
from tfpconv.keras.schedules import Connectivity, ConnectivitySchedule
from tfpconv.sparsity import patterns
from tfpconv.sparsity.allocation import check_allocation


class PatternConnectivity(Constraint):
    """Every selected 3x3 kernel keeps one library pattern or is removed whole.

    The arguments are :class:`tfpconv.callbacks.PatternPruning`'s (see there).
    """

    name = "patterns"

    def __init__(
        self,
        num_patterns: int = 8,
        connectivity: Connectivity | Mapping[str, float] = 0.0,
        *,
        library: Sequence[int] | None = None,
        layers: LayerFilter = None,
        first_layer: str = "dense",
        connectivity_allocation: str = "erdos_renyi",
        filter_group: FilterGroup = "auto",
    ) -> None:
        patterns.check_num_patterns(num_patterns)
        check_filter_group(filter_group)
        if library is not None:
            patterns.check_library(library)
        check_allocation(connectivity_allocation)
        check_first_layer(first_layer)
        self.num_patterns = num_patterns
        #: Per layer name, the final fraction of kernels removed (None: ``connectivity`` is
        #: model-wide). The schedule then runs to the largest of them and scales the others.
        self.per_layer: dict[str, float] | None = None
        if isinstance(connectivity, Mapping):
            for value in connectivity.values():
                patterns.check_connectivity(value)
            self.per_layer = {str(k): float(v) for k, v in connectivity.items()}
            connectivity = max(self.per_layer.values(), default=0.0)
        self.connectivity = ConnectivitySchedule(connectivity)
        self.layers = layers
        self.first_layer = first_layer
        self.connectivity_allocation = connectivity_allocation
        self.filter_group = filter_group
        self._given_library = library
        #: The pattern library in use (9-bit masks), set when training starts.
        self.library: np.ndarray | None = None
        #: Per layer name, the (in, out) codes fixed in the hard phase.
        self.codes: dict[str, np.ndarray] = {}
        self._targets: list[LayerTarget] = []
        #: Per target, its filter group (``filter_group`` resolved when training starts).
        self.groups: list[int] = []
        self._masks: list[tf.Tensor] = []

    # -- selection -----------------------------------------------------------------------------

    def select(self, model: Any) -> list[Any]:
        self._model = model
        self._targets = layer_targets(model, self.layers, self.first_layer)
        if self.per_layer is not None:
            unknown = sorted(set(self.per_layer) - {t.name for t in self._targets})
            if unknown:
                raise ValueError(
                    f"tfpconv.callbacks.PatternPruning: connectivity names layers that are not "
                    f"pruned 3x3 convolutions of {model.name!r}: {unknown}"
                )
        self.groups = layer_filter_groups(model, self._targets, self.filter_group)
        self.codes = {}
        self._masks = [None] * len(self._targets)
        return [t.layer for t in self._targets]

    def selected_layers(self) -> list[Any]:
        """The layers :meth:`select` chose."""
        return [t.layer for t in self._targets]

    def left_alone(self, model: Any) -> dict[str, str]:
        exempt = exempt_first_layer(model, self.first_layer)
        reasons = {}
        for layer in left_alone(model, [t.layer for t in self._targets]):
            reason = layer.reason
            if exempt is not None and layer.name == exempt.name:
                reason = "the model's first convolution, first_layer='dense'"
            reasons[layer.name] = reason
        return reasons

    def begin(self, kernels: Sequence[np.ndarray], share: Any) -> list[str]:
        library = resolve_library(self._targets, self.num_patterns, self._given_library)
        (self.library,) = share([library])
        return [
            f"tfpconv: pruning {len(self._targets)} layers, library "
            + " ".join(patterns.format_mask(int(mask)) for mask in self.library)
        ]

    # -- the schedule --------------------------------------------------------------------------

    def connectivity_at(self, at: SchedulePoint) -> float:
        """The model-wide connectivity at a point of the schedule."""
        if self.connectivity.constant is not None:
            return self.connectivity.constant * at.ramp
        return self.connectivity(at.step)

    def final_connectivity(self, at: SchedulePoint) -> float:
        if self.connectivity.constant is not None:
            return self.connectivity.constant
        return self.connectivity(max(at.final_step, at.step))

    def fractions(self, connectivity: float) -> list[float]:
        """Per target, the fraction of kernels removed at the model-wide ``connectivity``."""
        if self.per_layer is not None:
            peak = self.connectivity.constant or 0.0
            share = connectivity / peak if peak > 0 else 0.0
            return [self.per_layer.get(t.name, 0.0) * share for t in self._targets]
        return layer_connectivities(self._targets, connectivity, self.connectivity_allocation)

    # -- projections ---------------------------------------------------------------------------

    def project(self, index: int, weights: np.ndarray, at: SchedulePoint) -> np.ndarray:
        fraction = self.fractions(self.connectivity_at(at))[index]
        return patterns.project(weights, self.library, fraction, self.groups[index])[0]

    def fix(self, index: int, weights: np.ndarray, at: SchedulePoint) -> list[np.ndarray]:
        fraction = self.fractions(self.final_connectivity(at))[index]
        projected, codes = patterns.project(weights, self.library, fraction, self.groups[index])
        return [projected, codes]

    def adopt(self, index: int, structure: list[np.ndarray]) -> None:
        (codes,) = structure
        codes = np.asarray(codes).astype(np.int64)
        self.codes[self._targets[index].name] = codes
        mask = patterns.projection_mask(codes, self.library)
        self._masks[index] = tf.constant(mask.astype(np.float32))

    def enforce(self, index: int, weights: tf.Tensor) -> tf.Tensor:
        return weights * tf.cast(self._masks[index], weights.dtype)

    def hard_phase_messages(self, at: SchedulePoint) -> list[str]:
        final = self.final_connectivity(at)
        messages = [f"tfpconv: pattern masks fixed (connectivity {final:g})"]
        if self.connectivity_allocation != "uniform" and self.per_layer is None:
            split = ", ".join(
                f"{t.name} {fraction:.2f}"
                for t, fraction in zip(self._targets, self.fractions(final), strict=True)
            )
            messages.append(
                f"tfpconv: kernels removed per layer ({self.connectivity_allocation}): {split}"
            )
        return messages

    def metrics(self, at: SchedulePoint, hard: bool) -> dict[str, float]:
        value = self.final_connectivity(at) if hard else self.connectivity_at(at)
        return {"connectivity": float(value)}
