"""tfpconv.search: the genome, JCW's anchor selection, the front, and real searches on a tiny
model with a measured latency table, embedded (journal file) and on a real PostgreSQL server with
two worker processes, one of them killed mid-candidate."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
optuna = pytest.importorskip("optuna")

import tfpconv  # noqa: E402
import tfpconv.search as search  # noqa: E402
from tfpconv.runtime import latency_table as lt  # noqa: E402
from tfpconv.search.selection import AnchorSelection  # noqa: E402
from tfpconv.search.study import open_storage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def residual_model():
    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", name="res")(a)
    x = keras.layers.Add()([a, b])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="wide")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(x))


def test_space_bounds_protect_first_residual_and_strided_layers():
    space = search.SearchSpace.of(residual_model())
    # stem and res are joined by Add (one group, protected); the classifier is not a width gene.
    assert space.width_genes["stem"][0] == 0.5 and space.width_genes["down"][0] == 0.3
    assert set(space.width_genes) == {"stem", "down", "wide"}
    assert all(genes[-1] == 1.0 for genes in space.width_genes.values())
    # Every 3x3 conv may stay dense; the first one keeps its kernels (patterns at most); the
    # strided one loses at most 0.7.
    assert space.connectivity_genes["stem"] == [search.DENSE, 0.0]
    assert space.connectivity_genes["down"][-1] == 0.7
    assert space.connectivity_genes["wide"] == [search.DENSE] + [
        round(0.1 * i, 2) for i in range(10)
    ]
    assert space.uniform(width=0.1).widths == {"stem": 0.5, "down": 0.3, "wide": 0.3}
    assert space.uniform(connectivity=0.8).connectivity == {
        "stem": 0.0,
        "res": 0.8,
        "down": 0.7,
        "wide": 0.8,
    }
    channel_only = space.uniform(width=0.5, connectivity=search.DENSE)
    assert set(channel_only.connectivity.values()) == {search.DENSE}
    assert channel_only.pattern_connectivity == {}
    candidate = space.smallest
    assert candidate.pattern_connectivity == candidate.connectivity
    for each in (candidate, channel_only):
        assert search.Candidate.from_params(each.to_params()) == each
    with pytest.raises(ValueError, match="min_width"):
        search.SearchSpace.of(residual_model(), min_width=0.0)


def _trial(number, latency, accuracy):
    trial = optuna.trial.create_trial(values=[latency, accuracy], params={}, distributions={})
    trial.number = number
    return trial


def test_anchor_selection_keeps_the_most_accurate_within_each_anchor():
    trials = [
        _trial(0, 1.0, 0.50),
        _trial(1, 1.0, 0.60),  # best within 1.5 ms
        _trial(2, 2.0, 0.70),
        _trial(3, 2.5, 0.80),  # best within 3 ms
        _trial(4, 4.0, 0.95),  # the most accurate overall: over both anchors
        _trial(5, 3.0, 0.75),
    ]
    selection = AnchorSelection([3.0, 1.5], population_size=4)
    chosen = [t.number for t in selection(None, trials)]
    # round robin over the anchors (ascending): 1.5 -> 1, 3.0 -> 3, 1.5 -> 0, 3.0 -> 5
    assert chosen == [1, 3, 0, 5]
    # NSGA-II's crowding would keep the 0.95 trial; an anchor with nothing in reach takes the
    # fastest above it.
    assert [t.number for t in AnchorSelection([0.5], 2)(None, trials)] == [1, 0]
    with pytest.raises(ValueError, match="anchors"):
        AnchorSelection([], 4)


def test_front_select_save_load_and_plot(tmp_path):
    entries = [
        search.FrontEntry(search.Candidate({"a": 0.5}, {"b": 0.9}), 1.0, 0.80, 10, 5, 0.9),
        search.FrontEntry(search.Candidate({"a": 1.0}, {"b": 0.5}), 2.0, 0.90, 20, 9, 2.2),
    ]
    front = search.Front(entries, {"channel pruning only": entries[:1]}, [1.5], 3.0)
    assert search.select(front, 1.0).accuracy == 0.80  # measured 0.9 ms fits, 2.2 does not
    assert search.select(front, 2.2).accuracy == 0.90
    with pytest.raises(ValueError, match="fastest takes 0.900 ms"):
        search.select(front, 0.5)
    front.save(tmp_path / "front.json")
    again = search.Front.load(tmp_path / "front.json")
    assert again == front
    front.plot(tmp_path / "front.png")
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 1.000 | 0.900 | 80.00% |" in front.markdown()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a tfpconv search front"):
        search.Front.load(tmp_path / "bad.json")


def tiny_data(n=160):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12, 12, 1)).astype("float32")
    return x, (x.mean(axis=(1, 2, 3)) > 0).astype("int64")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A trained tiny model and its latency table measured here, both also on disk."""
    model = tfpconv.models.small_vgg((12, 12, 1), widths=(8, 16), name="tiny")
    x, y = tiny_data()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    table = lt.measure_table(model, calibration=2)
    directory = tmp_path_factory.mktemp("tiny")
    model.save(directory / "tiny.keras")
    table.save(directory / "table.json")
    return model, table, directory


def tiny_estimator(model):
    x, y = tiny_data()
    return search.AccuracyEstimator(
        model, x, y, finetune_steps=2, batch_size=32, calibration_batches=2
    )


def test_estimator_scores_a_candidate_on_held_out_images(tiny):
    model, _, _ = tiny
    estimator = tiny_estimator(model)
    assert len(estimator.x_val) == 32 and len(estimator.x_train) == 128
    space = search.SearchSpace.of(model)
    full = estimator.evaluate(space.uniform())
    small = estimator.evaluate(space.smallest)
    assert 0.0 <= small.accuracy <= 1.0 and 0.0 <= full.accuracy <= 1.0
    assert small.flops < full.flops / 4 and small.weights < full.weights / 4
    built = estimator.build(space.smallest)
    assert built.get_layer("conv2_2").kernel.shape[-1] == round(0.3 * 16)


def test_search_embedded_finds_a_front_caches_genomes_and_resumes(tiny, tmp_path):
    model, table, _ = tiny
    estimator = tiny_estimator(model)
    seen = []
    front = search.search(
        model, *tiny_data(), table, trials=8, storage=tmp_path / "s.journal",
        population_size=4, estimator=estimator, progress=lambda d, t: seen.append((d, t)),
    )  # fmt: skip
    assert seen[-1] == (8, 8)
    assert front.entries and len(front.anchors_ms) == 3
    assert sorted(e.predicted_ms for e in front.entries) == [e.predicted_ms for e in front.entries]
    space = search.SearchSpace.of(model)
    for entry in front.entries:
        for name, value in entry.candidate.widths.items():
            assert value in space.width_genes[name]
        assert entry.measured_ms > 0 and entry.flops > 0
    # No entry is dominated by another (a Pareto front).
    for a in front.entries:
        assert not any(
            b.predicted_ms <= a.predicted_ms and b.accuracy > a.accuracy for b in front.entries
        )
    assert set(front.baselines) == {"channel pruning only", "patterns + connectivity only"}
    channel_only = front.baselines["channel pruning only"]
    assert all(set(e.candidate.connectivity.values()) == {search.DENSE} for e in channel_only)
    # Resuming: the same storage and name continue the same study up to the new total.
    search.search(
        model, *tiny_data(), table, trials=10, storage=tmp_path / "s.journal",
        population_size=4, estimator=estimator, worker=True,
    )  # fmt: skip
    study = optuna.load_study(study_name="jcw-tiny", storage=open_storage(tmp_path / "s.journal"))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 10
    # The evolution started from the uniform baselines (their evaluations are the front's).
    uniform = [e.candidate for entries in front.baselines.values() for e in entries]
    started = [search.Candidate.from_params(t.params) for t in study.trials[: len(uniform)]]
    assert started == uniform
    by_genome = {}
    for trial in completed:
        key = tuple(sorted(search.Candidate.from_params(trial.params).to_params().items()))
        if key in by_genome:  # a repeated genome reuses the first evaluation
            assert trial.user_attrs["cached_from"] == by_genome[key].number
            assert trial.values == by_genome[key].values
        else:
            by_genome[key] = trial


def test_materialize_prunes_channels_and_returns_the_pruning_callback(tiny):
    model, _, _ = tiny
    candidate = search.SearchSpace.of(model).smallest
    small, callbacks = search.materialize(model, candidate, verbose=0)
    x, y = tiny_data()
    small.compile("adam", "sparse_categorical_crossentropy")
    small.fit(x, y, epochs=2, batch_size=32, callbacks=callbacks, verbose=0)
    codes = callbacks[0].codes
    assert set(codes) == {"conv1_1", *candidate.connectivity}
    for name, connectivity in candidate.connectivity.items():
        removed = (codes[name] == tfpconv.patterns.PRUNED).mean()
        assert removed == pytest.approx(connectivity, abs=0.1)


def test_dense_genes_leave_convolutions_without_patterns(tiny):
    model, table, _ = tiny
    estimator = tiny_estimator(model)
    space = search.SearchSpace.of(model)
    full = space.uniform(width=1.0)
    mixed = search.Candidate(
        full.widths,
        {"conv1_1": search.DENSE, "conv1_2": 0.5, "conv2_1": search.DENSE, "conv2_2": 0.9},
    )
    built = estimator.build(mixed)
    before = {la.name: np.asarray(la.kernel) for la in model.layers if la.name.startswith("conv")}

    def nonzero_taps(name):
        return np.count_nonzero(np.asarray(built.get_layer(name).kernel), axis=(0, 1))

    assert np.array_equal(np.asarray(built.get_layer("conv1_1").kernel), before["conv1_1"])
    assert np.array_equal(np.asarray(built.get_layer("conv2_1").kernel), before["conv2_1"])
    assert nonzero_taps("conv1_2").max() == 4 and nonzero_taps("conv2_2").max() == 4
    # The table predicts a dense convolution from its dense twin (TFLite's own path).
    sites = {s.layer: s for s in lt.conv_sites(model)}
    site = sites["conv2_1"]
    twin = table.shapes[site.key + "_dense"]
    assert twin.connectivities == [0.0]
    dense_ms = table.conv_ms(site, site.in_channels, site.out_channels, search.DENSE)
    assert dense_ms == twin.at(site.in_channels, site.out_channels, 0.0)
    assert dense_ms != table.conv_ms(site, site.in_channels, site.out_channels, 0.0)
    all_dense = space.uniform(connectivity=search.DENSE)
    assert table.predict(model, all_dense.widths, all_dense.connectivity) == table.predict(model)
    # Fine-tuning prunes the pattern convolutions only; with none, no callback.
    small, callbacks = search.materialize(model, mixed, verbose=0)
    small.compile("adam", "sparse_categorical_crossentropy")
    small.fit(*tiny_data(), epochs=1, batch_size=32, callbacks=callbacks, verbose=0)
    assert set(callbacks[0].codes) == {"conv1_2", "conv2_2"}
    assert search.materialize(model, all_dense)[1] == []
    assert 0.0 <= estimator.evaluate(all_dense).accuracy <= 1.0


def test_finalist_ranks_a_budgets_best_candidates_by_a_full_finetune(tiny):
    model, _, _ = tiny
    estimator = tiny_estimator(model)
    space = search.SearchSpace.of(model)

    def entry(candidate, ms, accuracy):
        return search.FrontEntry(candidate, ms, accuracy, 1, 1, measured_ms=ms)

    def finetuned(lines):
        return [line for line in lines if "after 1 epochs" in line]

    fast = entry(space.smallest, 1.0, 0.60)
    channel_only = entry(space.uniform(width=0.5, connectivity=search.DENSE), 2.0, 0.70)
    slow = entry(space.uniform(), 9.0, 0.99)  # over the budget
    front = search.Front([fast, slow], {"channel pruning only": [channel_only]}, [2.0], 9.0)
    lines = []
    best = search.finalist(front, estimator, 2.5, top=2, epochs=1, progress=lines.append)
    assert len(finetuned(lines)) == 2  # both candidates within 2.5 ms, the baseline included
    assert best.candidate in (fast.candidate, channel_only.candidate)
    # The entry carries the accuracy of the fine-tune, not the search's estimate.
    assert 0.0 <= best.accuracy <= 1.0
    assert any(f"-> {100 * best.accuracy:.2f}% after 1 epochs" in line for line in lines)
    # Each was timed again (the tiny model takes far less than the entries' made-up 1 and 2 ms,
    # so they keep their latencies, the slower of the two timings).
    assert sum("timed again" in line for line in lines) == 2
    assert best.latency_ms in (1.0, 2.0)
    # top=1: only the best estimate within the budget is fine-tuned (here the baseline).
    lines.clear()
    only = search.finalist(front, estimator, 2.5, top=1, epochs=1, progress=lines.append)
    assert only.candidate == channel_only.candidate and len(finetuned(lines)) == 1
    # A baseline the estimate ranks below the top is fine-tuned too: the pick never loses to it.
    lines.clear()
    favoured = entry(space.smallest, 1.0, 0.90)
    front = search.Front([favoured, slow], {"channel pruning only": [channel_only]}, [2.0], 9.0)
    search.finalist(front, estimator, 2.5, top=1, epochs=1, progress=lines.append, retime=False)
    assert [line.split(",")[0] for line in lines] == ["1.000 ms", "2.000 ms"]  # not timed again
    with pytest.raises(ValueError, match="fastest takes 1.000 ms"):
        search.finalist(front, estimator, 0.5)
    # A candidate whose one timing fitted by luck is dropped when it is timed again.
    lucky = entry(space.smallest, 1e-6, 0.95)
    front = search.Front([lucky], {"channel pruning only": [channel_only]}, [2.0], 9.0)
    with pytest.raises(ValueError, match="when timed again"):
        search.finalist(front, estimator, 1e-5, epochs=1)
    lines.clear()
    kept = search.finalist(front, estimator, 2.5, top=1, epochs=1, progress=lines.append)
    assert kept.latency_ms > 1e-6  # the slower timing: the real one
    assert len(finetuned(lines)) == 2  # the lucky one, still within 2.5 ms, and the baseline


@pytest.fixture
def postgres():
    if shutil.which("runuser") is None or not any(Path("/usr/lib/postgresql").glob("*/bin")):
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    # Not under pytest's tmp_path: as root the server runs as the postgres user, who must reach it.
    data = Path(tempfile.mkdtemp(prefix="tfpconv-pg-"))
    port = str(56000 + os.getpid() % 1000)
    url = subprocess.run(
        ["bash", str(ROOT / "scripts/postgres.sh"), "start", str(data), port],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    yield url
    subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "stop", str(data)], check=True)
    shutil.rmtree(data, ignore_errors=True)


def _worker(url, directory, trials, pause=0.0):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/search_worker.py"), url,
         str(directory / "table.json"), str(directory / "tiny.keras"), str(trials), str(pause)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_two_workers_share_a_study_on_postgresql_and_survive_a_kill(tiny, postgres):
    model, _, directory = tiny
    space = search.SearchSpace.of(model)
    genes = len(space.width_genes) + len(space.connectivity_genes)
    storage = open_storage(postgres)
    # A worker that pauses in every candidate is killed while it evaluates one.
    doomed = _worker(postgres, directory, 6, pause=60)
    deadline = time.time() + 120
    while time.time() < deadline:
        names = [s.study_name for s in storage.get_all_studies()]
        if "shared" in names:
            study = optuna.load_study(study_name="shared", storage=storage)
            # Running with its whole genome written (the genes are written one by one): the
            # worker is inside the evaluation.
            running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
            if any(len(t.params) == genes for t in running):
                break
        time.sleep(0.5)
    else:
        doomed.kill()
        pytest.fail("the first worker never started a trial:\n" + doomed.communicate()[0])
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    killed = next(
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.RUNNING and len(t.params) == genes
    )
    # Two fresh workers finish the study together; the killed candidate is evaluated again.
    workers = [_worker(postgres, directory, 6) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(outputs)
    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 6
    assert study.trials[killed.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retried and retried[0].params == killed.params
    assert len({t.user_attrs.get("worker") for t in study.trials if "worker" in t.user_attrs}) == 2


def test_cli_search_writes_the_front_table_and_plot(tiny, tmp_path, capsys):
    from tfpconv.cli import main

    _, _, directory = tiny
    x, y = tiny_data()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    args = [
        "search", str(directory / "tiny.keras"), "--table", str(directory / "table.json"),
        "--data", str(tmp_path / "data.npz"), "--trials", "4", "--population", "4",
        "--finetune-steps", "1", "-o", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| predicted ms | measured ms |" in out and "front.png" in out
    front = search.Front.load(tmp_path / "out/front.json")
    assert front.entries and (tmp_path / "out/front.png").is_file()
    assert (tmp_path / "out/search.journal").is_file()
    # Bad data names the file.
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main([*args[:4], "--data", str(tmp_path / "bad.npz"), *args[6:]]) != 0
    assert "bad.npz" in capsys.readouterr().err
