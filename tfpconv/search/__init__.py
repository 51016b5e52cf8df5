"""JCW: one multi-objective search for the latency / accuracy front of a trained model.

The genome is a channel keep ratio per prunable group and a pattern connectivity per 3x3
convolution (:mod:`tfpconv.search.space`); latency is predicted by a
:class:`~tfpconv.runtime.latency_table.LatencyTable` measured through the runtime; accuracy is
estimated by a short fine-tune of the inherited weights on a held-out split
(:mod:`tfpconv.search.estimator`). Optuna's NSGA-II sampler runs the evolution with JCW's
selection around several latency anchors (:mod:`tfpconv.search.selection`), and its storage holds
the state, so several workers can share one study (:mod:`tfpconv.search.study`).

Example::

    table = tfpconv.runtime.latency_table.measure_table(model)
    front = tfpconv.search.search(model, x_train, y_train, table, trials=60,
                                  storage="runs/search.journal")
    best = tfpconv.search.select(front, latency_ms=0.5)
    small, callbacks = tfpconv.search.materialize(model, best.candidate)
    small.compile(...); small.fit(x_train, y_train, epochs=4, callbacks=callbacks)
    tfpconv.convert(small, "small.tflite")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfpconv.keras import channels
from tfpconv.keras.callbacks import PatternPruning
from tfpconv.runtime.latency_table import LatencyTable
from tfpconv.search.estimator import AccuracyEstimator
from tfpconv.search.front import Front, FrontEntry, select
from tfpconv.search.space import Candidate, SearchSpace
from tfpconv.search.study import baseline, default_anchors, front_of, open_storage, open_study, run

__all__ = [
    "AccuracyEstimator",
    "Candidate",
    "Front",
    "FrontEntry",
    "SearchSpace",
    "materialize",
    "search",
    "select",
]

#: Uniform baselines drawn next to the front: channel pruning alone, patterns alone.
CHANNEL_RATIOS = (0.9, 0.7, 0.5, 0.3)
CONNECTIVITIES = (0.5, 0.72, 0.9)


def search(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    table: LatencyTable,
    trials: int = 60,
    *,
    anchors_ms: Sequence[float] | None = None,
    storage: str | Path | Any = "tfpconv_search.journal",
    study_name: str | None = None,
    population_size: int = 12,
    worker: bool = False,
    estimator: AccuracyEstimator | None = None,
    space: SearchSpace | None = None,
    baselines: bool = True,
    measure: bool = True,
    threads: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Front | None:
    """Search per-group channel widths and per-conv connectivities of a trained model.

    Args:
      model: the trained Keras model (left unchanged).
      x, y: training images and integer labels (a validation split is held out of them).
      table: the model's latency table on the target device and thread count.
      trials: completed candidates the study holds when the search ends (all workers together).
      anchors_ms: latency targets JCW keeps candidates near (default: three, spread between
        the smallest candidate's and the full model's predicted latency).
      storage: a journal file path (default; one machine) or a database URL such as
        ``postgresql://user@host/db`` that workers on other machines join (or an optuna
        storage object, e.g. from :func:`tfpconv.search.study.open_storage` with other
        heartbeat settings).
      study_name: the study's name in the storage (default: ``"jcw-" + model.name``).
      population_size: NSGA-II's population per generation.
      worker: only evaluate candidates (join the study); return None instead of the front.
      estimator: how candidates are scored (default: :class:`AccuracyEstimator` on ``x, y``).
      space: the genome's bounds (default: :meth:`SearchSpace.of` the model).
      baselines: also evaluate channel-only and pattern-only pruning at uniform ratios.
      measure: time the front's (and baselines') converted models through the runtime.
      threads: threads of those timings (the table's).
      seed: of the sampler.
      progress: ``progress(done, total)`` after each trial.

    Returns:
      The :class:`Front` (fastest first), or None for a worker.
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    space = space or SearchSpace.of(model)
    estimator = estimator or AccuracyEstimator(model, x, y)
    anchors = list(anchors_ms) if anchors_ms else default_anchors(table, model, space)
    study = open_study(
        open_storage(storage) if isinstance(storage, (str, Path)) else storage,
        study_name or f"jcw-{model.name}",
        anchors,
        population_size,
        seed,
    )
    run(study, model, space, table, estimator, trials, progress)
    if worker:
        return None
    front = front_of(study, model, estimator, table, measure, threads)
    if baselines:
        front.baselines = {
            "channel pruning only": baseline(
                model, table, estimator,
                [space.uniform(width=r) for r in CHANNEL_RATIOS], measure, threads,
            ),
            "patterns + connectivity only": baseline(
                model, table, estimator,
                [space.uniform(connectivity=c) for c in CONNECTIVITIES], measure, threads,
            ),
        }  # fmt: skip
    return front


def materialize(
    model: Any, candidate: Candidate, num_patterns: int = 8, **pruning: Any
) -> tuple[Any, list[Any]]:
    """The candidate ready for a full fine-tune: the channel-pruned model (weights inherited) and
    the callbacks that prune its 3x3 convolutions to the candidate's connectivities while ``fit``
    trains (``pruning`` goes to :class:`~tfpconv.callbacks.PatternPruning`; the first
    convolution gets patterns, as the latency table timed it, unless ``first_layer`` says
    otherwise)."""
    smaller = channels.prune(model, candidate.widths)
    pruning.setdefault("first_layer", "patterns")
    return smaller, [PatternPruning(num_patterns, dict(candidate.connectivity), **pruning)]
