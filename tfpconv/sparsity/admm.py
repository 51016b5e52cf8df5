"""ADMM for a constraint set given by its projection (NumPy only, no Keras).

ADMM splits ``min f(W)  s.t. W in S`` into ``min f(W) + rho/2 ||W - Z + U||^2`` with the auxiliary
``Z = project(W + U)`` and the scaled dual ``U += W - Z``. The projection is any function onto S
(patterns, connectivity, N:M, unification...), so the same state serves every kind of sparsity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Maps a weight array onto the constraint set (same shape in, same shape out).
Projection = Callable[[np.ndarray], np.ndarray]


@dataclass
class ADMMState:
    """Auxiliary variable Z and scaled dual U of one weight array."""

    z: np.ndarray
    u: np.ndarray

    @classmethod
    def start(cls, weights: np.ndarray, project: Projection) -> ADMMState:
        """Z = project(W), U = 0."""
        weights = np.asarray(weights)
        return cls(z=project(weights), u=np.zeros_like(weights))

    def update(self, weights: np.ndarray, project: Projection, dual_decay: float = 1.0) -> None:
        """One ADMM round: Z = project(W + U), then U = dual_decay * (U + W - Z).

        ``dual_decay`` 1 is plain ADMM; below 1 what U holds fades by that factor per round, so a
        removed weight returns only if the loss keeps regrowing it within the last
        ``1 / (1 - dual_decay)`` rounds or so; 0 makes Z a projection of W alone."""
        if not 0.0 <= dual_decay <= 1.0:
            raise ValueError(f"dual_decay must be in [0, 1], got {dual_decay}")
        weights = np.asarray(weights)
        self.z = project(weights + self.u)
        self.u = dual_decay * (self.u + weights - self.z)

    def rescale_penalty(self, factor: float) -> None:
        """Keep the unscaled dual ``rho * U`` when rho is multiplied by ``factor``: U /= factor.

        Without it a growing rho also grows the dual's pull, and W overshoots past Z."""
        self.u = self.u / factor

    def target(self) -> np.ndarray:
        """Where the penalty pulls W: the minimiser of ||W - Z + U||^2, i.e. Z - U."""
        return self.z - self.u

    def gap(self, weights: np.ndarray) -> float:
        """Relative primal residual ||W - Z|| / ||W||: 0 once W satisfies the constraints."""
        norm = float(np.linalg.norm(weights))
        return float(np.linalg.norm(np.asarray(weights) - self.z)) / max(norm, 1e-12)


def penalty_step(weights: np.ndarray, target: np.ndarray, step: float) -> np.ndarray:
    """The exact proximal step of ``rho/2 ||W - target||^2`` with ``step = lr * rho``.

    ``argmin_X ||X - W||^2 / (2 lr) + rho/2 ||X - target||^2 = (W + step * target) / (1 + step)``.
    Unlike a plain gradient step it never overshoots, however large rho grows.
    """
    return (weights + step * target) / (1.0 + step)
