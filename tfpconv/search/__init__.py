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
    best = tfpconv.search.select(front, latency_ms=0.5)      # by the search's estimate, or
    estimator = tfpconv.search.AccuracyEstimator(model, x_train, y_train)
    best = tfpconv.search.finalist(front, estimator, latency_ms=0.5)   # top 3 fine-tuned
    small, callbacks = tfpconv.search.materialize(model, best.candidate)
    small.compile(...); small.fit(x_train, y_train, epochs=4, callbacks=callbacks)
    tfpconv.convert(small, "small.tflite")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfpconv.runtime.latency_table import LatencyTable
from tfpconv.search.estimator import AccuracyEstimator, materialize
from tfpconv.search.front import Front, FrontEntry, select
from tfpconv.search.space import DENSE, Candidate, SearchSpace
from tfpconv.search.study import (
    baseline,
    default_anchors,
    front_of,
    measured_ms,
    open_storage,
    open_study,
    run,
)

__all__ = [
    "DENSE",
    "AccuracyEstimator",
    "Candidate",
    "Front",
    "FrontEntry",
    "SearchSpace",
    "finalist",
    "materialize",
    "search",
    "select",
]

#: Uniform baselines drawn next to the front: channel pruning alone, patterns alone.
CHANNEL_RATIOS = (0.9, 0.7, 0.5, 0.3)
CONNECTIVITIES = (0.5, 0.7, 0.9)


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
    start_from_baselines: bool = True,
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
      start_from_baselines: a new study's first candidates are those uniform ratios, so the
        evolution starts from them (and the front contains them unless it beats them).
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
    uniform = {
        "channel pruning only": [
            space.uniform(width=r, connectivity=DENSE) for r in CHANNEL_RATIOS
        ],
        "patterns + connectivity only": [space.uniform(connectivity=c) for c in CONNECTIVITIES],
    }
    anchors = list(anchors_ms) if anchors_ms else default_anchors(table, model, space)
    study = open_study(
        open_storage(storage) if isinstance(storage, (str, Path)) else storage,
        study_name or f"jcw-{model.name}",
        anchors,
        population_size,
        seed,
    )
    if start_from_baselines and not study.trials:
        for candidates in uniform.values():
            for candidate in candidates:
                study.enqueue_trial(candidate.to_params(), skip_if_exists=True)
    run(study, model, space, table, estimator, trials, progress)
    if worker:
        return None
    front = front_of(study, model, estimator, table, measure, threads)
    if baselines:
        front.baselines = {
            name: baseline(study, model, table, estimator, candidates, measure, threads)
            for name, candidates in uniform.items()
        }
    return front


def finalist(
    front: Front,
    estimator: AccuracyEstimator,
    latency_ms: float,
    top: int = 3,
    epochs: int = 2,
    progress: Callable[[str], None] | None = None,
    *,
    retime: bool = True,
    threads: int = 1,
) -> FrontEntry:
    """The best candidate for a latency budget, ranked by a faithful fine-tune.

    The short fine-tune of the search ranks candidates cheaply but not always in the order a full
    fine-tune leaves them (a one-shot projection at high connectivity recovers more with gradual
    pruning than 100 steps show). So the ``top`` candidates within ``latency_ms`` (measured where
    known), from the front and the uniform baselines (which are points of the search space), are
    fine-tuned as a user would for ``epochs`` epochs
    (:meth:`AccuracyEstimator.finetuned_accuracy`), and so is the best-estimated baseline of each
    kind within the budget when it is not among them (so the pick is never worse on validation
    than uniform pruning alone); the one with the best validation accuracy wins, and the returned
    entry carries that accuracy. Never the test set.

    With ``retime`` every candidate is timed once more (``threads`` threads) before it becomes a
    finalist and kept only if that timing fits the budget too (its latency is then the slower of
    the two): a single timing at the budget's edge fits by luck as often as not, and the model the
    user deploys must fit after the fine-tune.

    Raises:
      ValueError: no candidate is that fast (as :func:`select`), or none is when timed again.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    pool = Front(
        front.entries + [e for entries in front.baselines.values() for e in entries],
        dense_ms=front.dense_ms,
    )
    select(pool, latency_ms)  # raises the usual message when nothing fits

    timed: dict[tuple, FrontEntry | None] = {}  # by candidate: None when it missed, timed again

    def fits(entry: FrontEntry) -> FrontEntry | None:
        """The entry if it fits the budget (timed again with ``retime``), else None."""
        key = tuple(sorted(entry.candidate.to_params().items()))
        if key in timed:
            return timed[key]
        fitting: FrontEntry | None = None
        if entry.latency_ms <= latency_ms:
            fitting = entry
            if retime:
                again = measured_ms(estimator, entry.candidate, threads)
                if progress is not None:
                    progress(f"timed again: {again:.3f} ms (was {entry.latency_ms:.3f} ms)")
                slower = dataclasses.replace(entry, measured_ms=max(entry.latency_ms, again))
                fitting = slower if again <= latency_ms else None
        timed[key] = fitting
        return fitting

    def best_fitting(entries: list[FrontEntry], wanted: int) -> list[FrontEntry]:
        """Up to ``wanted`` distinct candidates that fit, best estimate first."""
        chosen: list[FrontEntry] = []
        for entry in sorted(entries, key=lambda e: (-e.accuracy, e.latency_ms)):
            if len(chosen) == wanted:
                break
            fitting = fits(entry)
            if fitting is not None and fitting.candidate not in [c.candidate for c in chosen]:
                chosen.append(fitting)
        return chosen

    finalists = best_fitting(pool.entries, top)
    for entries in front.baselines.values():
        for entry in best_fitting(entries, 1):
            if entry.candidate not in [f.candidate for f in finalists]:
                finalists.append(entry)
    if not finalists:
        raise ValueError(
            f"no candidate runs within {latency_ms:g} ms when timed again; raise the budget or "
            f"search with a lower anchor"
        )
    scored = []
    for entry in finalists:
        accuracy = estimator.finetuned_accuracy(entry.candidate, epochs)
        if progress is not None:
            progress(f"{entry.latency_ms:.3f} ms, estimate {100 * entry.accuracy:.2f}% -> "
                     f"{100 * accuracy:.2f}% after {epochs} epochs")  # fmt: skip
        scored.append(dataclasses.replace(entry, accuracy=accuracy))
    return max(scored, key=lambda e: (e.accuracy, -e.latency_ms))
