"""The genome JCW searches: a channel keep ratio per prunable group, a connectivity per 3x3 conv.

Both on a 0.1 grid with bounds (JCW's): channel groups produced by the first convolution or joined
by a residual ``Add`` keep at least ``min_protected_width``, the others at least ``min_width``; the
model's first convolution keeps all its kernels (few input channels, as in
:class:`tfpconv.callbacks.PatternPruning`), strided ones lose at most ``max_strided_connectivity``.

A 3x3 convolution's gene may also be :data:`DENSE` (``None``): no patterns, the layer stays dense
and runs on TFLite's own path. So channel pruning alone is a point of the space, and the search
decides per layer whether patterns pay (on small layers TFLite's dense kernels can be faster).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfpconv.keras import channels
from tfpconv.runtime.latency_table import conv_sites

__all__ = ["DENSE", "Candidate", "SearchSpace"]

GRID = 0.1
#: The connectivity gene of a 3x3 convolution left dense (no patterns, run by TFLite).
DENSE = None

Connectivity = float | None


def _grid_values(low: float, high: float) -> list[float]:
    steps = int(round((high - low) / GRID))
    return [round(low + GRID * i, 2) for i in range(steps + 1)]


@dataclass(frozen=True)
class Candidate:
    """One point of the search: per channel group a keep ratio, per 3x3 conv a connectivity
    (:data:`DENSE` for a convolution left without patterns)."""

    widths: dict[str, float] = field(default_factory=dict)
    connectivity: dict[str, Connectivity] = field(default_factory=dict)

    def to_params(self) -> dict[str, Connectivity]:
        return {**{f"w:{k}": v for k, v in self.widths.items()},
                **{f"c:{k}": v for k, v in self.connectivity.items()}}  # fmt: skip

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Candidate:
        widths = {k[2:]: round(float(v), 2) for k, v in params.items() if k.startswith("w:")}
        conn = {
            k[2:]: DENSE if v is DENSE else round(float(v), 2)
            for k, v in params.items()
            if k.startswith("c:")
        }
        return cls(widths, conn)

    @property
    def pattern_connectivity(self) -> dict[str, float]:
        """The convolutions that get patterns, with their connectivity (the dense ones left out)."""
        return {k: v for k, v in self.connectivity.items() if v is not DENSE}


@dataclass
class SearchSpace:
    """The genes of a model, each with its allowed values (ascending; a connectivity gene's
    :data:`DENSE` first)."""

    width_genes: dict[str, list[float]]
    connectivity_genes: dict[str, list[Connectivity]]

    @classmethod
    def of(
        cls,
        model: Any,
        min_width: float = 0.3,
        min_protected_width: float = 0.5,
        max_connectivity: float = 0.9,
        max_strided_connectivity: float = 0.7,
    ) -> SearchSpace:
        """The search space of a trained Keras model (see the module docstring for the bounds)."""
        for name, value in (("min_width", min_width), ("min_protected_width", min_protected_width)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        for name, value in (
            ("max_connectivity", max_connectivity),
            ("max_strided_connectivity", max_strided_connectivity),
        ):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        sites = conv_sites(model)
        first = sites[0].layer if sites else None
        width_genes = {}
        for group in channels.groups(model):
            if not group.prunable:
                continue
            protected = first in group.producers or len(group.producers) > 1
            width_genes[group.name] = _grid_values(
                min_protected_width if protected else min_width, 1.0
            )
        connectivity_genes: dict[str, list[Connectivity]] = {
            site.layer: [DENSE]
            + (
                [0.0]  # the first convolution: patterns at most, all its kernels kept
                if site.layer == first
                else _grid_values(
                    0.0, max_strided_connectivity if site.stride > 1 else max_connectivity
                )
            )
            for site in sites
            if site.pattern
        }
        if not width_genes and not connectivity_genes:
            raise ValueError(
                f"model {model.name!r} has nothing to search: no prunable channel group and no "
                "3x3 convolution"
            )
        return cls(width_genes, connectivity_genes)

    def suggest(self, trial: Any) -> Candidate:
        """The candidate an optuna trial proposes (its sampler chooses the genes)."""
        params: dict[str, Any] = {}
        for name, values in self.width_genes.items():
            params["w:" + name] = trial.suggest_float("w:" + name, values[0], values[-1], step=GRID)
        for name, choices in self.connectivity_genes.items():
            # Categorical: DENSE is not a point on the connectivity scale.
            params["c:" + name] = trial.suggest_categorical("c:" + name, choices)
        return Candidate.from_params(params)

    def uniform(self, width: float = 1.0, connectivity: Connectivity = 0.0) -> Candidate:
        """Every group at ``width`` and every conv at ``connectivity`` (:data:`DENSE`: channel
        pruning alone), clamped to each gene's bounds."""

        def clamp(values: list[Connectivity]) -> Connectivity:
            if connectivity is DENSE:
                return DENSE
            grid = [v for v in values if v is not DENSE]
            return float(np.clip(connectivity, grid[0], grid[-1]))

        return Candidate(
            {k: float(np.clip(width, v[0], v[-1])) for k, v in self.width_genes.items()},
            {k: clamp(v) for k, v in self.connectivity_genes.items()},
        )

    @property
    def smallest(self) -> Candidate:
        """Every gene at its smallest-model end."""
        return Candidate(
            {k: v[0] for k, v in self.width_genes.items()},
            {k: v[-1] for k, v in self.connectivity_genes.items()},
        )
