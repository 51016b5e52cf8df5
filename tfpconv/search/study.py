"""The search itself: an optuna study with NSGA-II and JCW's anchors, run by one or many workers.

The state lives in optuna storage. By default a journal file on this machine (nothing to start);
for a cluster a database URL (``postgresql://user@host/db``) that any number of workers join with
the same study name. With a database, workers send heartbeats: the trial of a killed worker is
marked failed after ``grace_period`` seconds and its candidate evaluated again by another worker.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from tfpconv.runtime.latency_table import LatencyTable, measured_latency
from tfpconv.search.estimator import AccuracyEstimator
from tfpconv.search.front import Front, FrontEntry
from tfpconv.search.selection import AnchorSelection
from tfpconv.search.space import Candidate, SearchSpace
from tfpconv.tflite.conversion import convert_model

__all__ = ["default_anchors", "open_study", "run", "front_of"]

DIRECTIONS = ["minimize", "maximize"]  # latency (ms, predicted by the table), accuracy


def open_storage(storage: str | Path, heartbeat_interval: int = 30, grace_period: int = 90) -> Any:
    """Optuna storage from a database URL (with heartbeats) or a journal file path."""
    text = str(storage)
    if "://" in text:
        return RDBStorage(
            text,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=3),
        )
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(text))


def default_anchors(
    table: LatencyTable, model: Any, space: SearchSpace, count: int = 3
) -> list[float]:
    """``count`` latencies spread evenly between the smallest candidate's and the full model's."""
    smallest = space.smallest
    low = table.predict(model, smallest.widths, smallest.connectivity)
    high = table.predict(model)
    return [float(a) for a in np.linspace(low, high, count + 2)[1:-1]]


def open_study(
    storage: Any, study_name: str, anchors_ms: Sequence[float], population_size: int, seed: int
) -> optuna.Study:
    """Create the study or join it; the anchors are the study's (the first worker sets them)."""
    known = {s.study_name: s for s in storage.get_all_studies()}
    if study_name in known:
        anchors_ms = known[study_name].user_attrs.get("anchors_ms", anchors_ms)
    with warnings.catch_warnings():  # the selection hook is marked experimental in optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.NSGAIISampler(
            population_size=population_size,
            seed=seed,
            elite_population_selection_strategy=AnchorSelection(anchors_ms, population_size),
        )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=DIRECTIONS,
        sampler=sampler,
        load_if_exists=True,
    )
    if "anchors_ms" not in study.user_attrs:
        study.set_user_attr("anchors_ms", [float(a) for a in anchors_ms])
    return study


def _completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def measured_ms(estimator: AccuracyEstimator, candidate: Candidate, threads: int) -> float:
    """The candidate built (no fine-tune: latency does not depend on it), converted and timed."""
    return measured_latency(convert_model(estimator.build(candidate)), threads)


def _cached(study: optuna.Study, candidate: Candidate) -> optuna.trial.FrozenTrial | None:
    # Compared as candidates: optuna keeps the raw floats of its 0.1 grid (0.30000000000000004).
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if Candidate.from_params(trial.params) == candidate:
            return trial
    return None


def run(
    study: optuna.Study,
    model: Any,
    space: SearchSpace,
    table: LatencyTable,
    estimator: AccuracyEstimator,
    trials: int,
    progress: Any = None,
) -> None:
    """Evaluate candidates until the study holds ``trials`` completed ones (all workers together).

    ``progress(done, total)`` is called after every trial of this worker.
    """

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        candidate = space.suggest(trial)
        earlier = _cached(trial.study, candidate)
        if earlier is not None:  # the same genome again (NSGA-II repeats itself): no new fine-tune
            for key, value in earlier.user_attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("cached_from", earlier.number)
            return tuple(earlier.values)
        predicted = table.predict(model, candidate.widths, candidate.connectivity)
        evaluation = estimator.evaluate(candidate)
        trial.set_user_attr("flops", evaluation.flops)
        trial.set_user_attr("weights", evaluation.weights)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return predicted, evaluation.accuracy

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            progress(min(_completed(study), trials), trials)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if _completed(study) >= trials:
        return
    study.optimize(
        objective,
        callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE,)), report],
        catch=(),
    )


def front_of(
    study: optuna.Study,
    model: Any,
    estimator: AccuracyEstimator,
    table: LatencyTable,
    measure: bool = True,
    threads: int = 1,
) -> Front:
    """The study's Pareto front (fastest first); with ``measure`` every front candidate is built,
    converted and timed through the runtime as deployed."""
    entries = []
    for trial in sorted(study.best_trials, key=lambda t: t.values[0]):
        candidate = Candidate.from_params(trial.params)
        entries.append(
            FrontEntry(
                candidate, float(trial.values[0]), float(trial.values[1]),
                int(trial.user_attrs.get("flops", 0)), int(trial.user_attrs.get("weights", 0)),
                measured_ms=measured_ms(estimator, candidate, threads) if measure else None,
                trial=trial.number,
            )
        )  # fmt: skip
    return Front(
        entries,
        anchors_ms=list(study.user_attrs.get("anchors_ms", [])),
        dense_ms=table.predict(model),
    )


def baseline(
    study: optuna.Study,
    model: Any,
    table: LatencyTable,
    estimator: AccuracyEstimator,
    candidates: Sequence[Candidate],
    measure: bool = True,
    threads: int = 1,
) -> list[FrontEntry]:
    """Fixed candidates (uniform ratios) evaluated exactly as the searched ones (the study's
    evaluation where it has one)."""
    entries = []
    for candidate in candidates:
        earlier = _cached(study, candidate)
        if earlier is not None:
            accuracy = float(earlier.values[1])
            flops, weights = int(earlier.user_attrs["flops"]), int(earlier.user_attrs["weights"])
        else:
            evaluation = estimator.evaluate(candidate)
            accuracy, flops, weights = evaluation.accuracy, evaluation.flops, evaluation.weights
        entries.append(
            FrontEntry(
                candidate, table.predict(model, candidate.widths, candidate.connectivity),
                accuracy, flops, weights,
                measured_ms=measured_ms(estimator, candidate, threads) if measure else None,
            )
        )  # fmt: skip
    return entries
