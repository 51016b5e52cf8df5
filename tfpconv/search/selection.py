"""JCW's selection over several latency anchors, plugged into optuna's NSGA-II sampler.

NSGA-II keeps the non-dominated trials spread along the whole front. JCW instead keeps, for each
of several latency targets (anchors), the most accurate candidates that meet it, so every
deployment budget has its own parents. The population's slots go round-robin over the anchors;
each anchor takes its next most accurate trial within its latency (ties: the faster one), or when
none is left, the fastest trial above it. Crossover, mutation and the generations stay optuna's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["AnchorSelection"]

#: Objective indices: trials report (latency_ms, accuracy).
LATENCY, ACCURACY = 0, 1


class AnchorSelection:
    """``elite_population_selection_strategy`` for :class:`optuna.samplers.NSGAIISampler`."""

    def __init__(self, anchors_ms: Sequence[float], population_size: int) -> None:
        if not anchors_ms or any(a <= 0 for a in anchors_ms):
            raise ValueError(f"latency anchors must be positive milliseconds, got {anchors_ms}")
        if population_size < len(anchors_ms):
            raise ValueError(
                f"population_size {population_size} is smaller than the number of anchors "
                f"({len(anchors_ms)}): each anchor needs a slot"
            )
        self.anchors_ms = sorted(float(a) for a in anchors_ms)
        self.population_size = population_size

    def _ranked(self, anchor: float, trials: list[Any]) -> list[Any]:
        within = [t for t in trials if t.values[LATENCY] <= anchor]
        above = [t for t in trials if t.values[LATENCY] > anchor]
        within.sort(key=lambda t: (-t.values[ACCURACY], t.values[LATENCY]))
        above.sort(key=lambda t: (t.values[LATENCY], -t.values[ACCURACY]))
        return within + above

    def __call__(self, study: Any, population: list[Any]) -> list[Any]:
        trials = [t for t in population if t.values is not None]
        queues = [iter(self._ranked(a, trials)) for a in self.anchors_ms]
        chosen: dict[int, Any] = {}
        slot = 0
        while len(chosen) < min(self.population_size, len(trials)):
            for trial in queues[slot % len(queues)]:
                if trial.number not in chosen:
                    chosen[trial.number] = trial
                    break
            slot += 1
        return list(chosen.values())
