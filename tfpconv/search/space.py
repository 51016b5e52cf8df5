"""The genome JCW searches: a channel keep ratio per prunable group, a connectivity per 3x3 conv.

Both on a 0.1 grid with bounds (JCW's): channel groups produced by the first convolution or joined
by a residual ``Add`` keep at least ``min_protected_width``, the others at least ``min_width``; the
model's first convolution keeps all its kernels (few input channels, as in
:class:`tfpconv.callbacks.PatternPruning`), strided ones lose at most ``max_strided_connectivity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfpconv.keras import channels
from tfpconv.runtime.latency_table import conv_sites

__all__ = ["Candidate", "SearchSpace"]

GRID = 0.1


def _grid_values(low: float, high: float) -> list[float]:
    steps = int(round((high - low) / GRID))
    return [round(low + GRID * i, 2) for i in range(steps + 1)]


@dataclass(frozen=True)
class Candidate:
    """One point of the search: per channel group a keep ratio, per 3x3 conv a connectivity."""

    widths: dict[str, float] = field(default_factory=dict)
    connectivity: dict[str, float] = field(default_factory=dict)

    def to_params(self) -> dict[str, float]:
        return {**{f"w:{k}": v for k, v in self.widths.items()},
                **{f"c:{k}": v for k, v in self.connectivity.items()}}  # fmt: skip

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Candidate:
        widths = {k[2:]: round(float(v), 2) for k, v in params.items() if k.startswith("w:")}
        conn = {k[2:]: round(float(v), 2) for k, v in params.items() if k.startswith("c:")}
        return cls(widths, conn)


@dataclass
class SearchSpace:
    """The genes of a model, each with its allowed values (ascending)."""

    width_genes: dict[str, list[float]]
    connectivity_genes: dict[str, list[float]]

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
        connectivity_genes = {
            site.layer: _grid_values(
                0.0, max_strided_connectivity if site.stride > 1 else max_connectivity
            )
            for site in sites
            if site.pattern and site.layer != first
        }
        if not width_genes and not connectivity_genes:
            raise ValueError(
                f"model {model.name!r} has nothing to search: no prunable channel group and no "
                "3x3 convolution but the first"
            )
        return cls(width_genes, connectivity_genes)

    def suggest(self, trial: Any) -> Candidate:
        """The candidate an optuna trial proposes (its sampler chooses the genes)."""
        params = {}
        for prefix, genes in (("w:", self.width_genes), ("c:", self.connectivity_genes)):
            for name, values in genes.items():
                params[prefix + name] = trial.suggest_float(
                    prefix + name, values[0], values[-1], step=GRID
                )
        return Candidate.from_params(params)

    def uniform(self, width: float = 1.0, connectivity: float = 0.0) -> Candidate:
        """Every group at ``width`` and every conv at ``connectivity``, clamped to the bounds."""
        return Candidate(
            {k: float(np.clip(width, v[0], v[-1])) for k, v in self.width_genes.items()},
            {
                k: float(np.clip(connectivity, v[0], v[-1]))
                for k, v in self.connectivity_genes.items()
            },
        )

    @property
    def smallest(self) -> Candidate:
        """Every gene at its smallest-model end."""
        return Candidate(
            {k: v[0] for k, v in self.width_genes.items()},
            {k: v[-1] for k, v in self.connectivity_genes.items()},
        )
