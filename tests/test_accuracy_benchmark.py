"""The accuracy benchmark script runs end to end at a tiny scale and reports what it trained."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--epochs",
    "2",
    "--train-size",
    "256",
    "--widths",
    "8",
    "16",
    "16",
    "--pruning-epochs",
    "1",
]


def run_benchmark(*args, script="accuracy.py"):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_accuracy_benchmark_writes_its_results(tmp_path):
    result = run_benchmark(*TINY, "--variants", "dense", "pconv-8p-c0.72", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "accuracy.json").read_text())
    dense, pruned = payload["results"]
    assert payload["config"]["pruning_epochs"] == 1
    assert payload["config"]["update_every"] is None  # the callback's own schedule
    assert [dense["variant"], pruned["variant"]] == ["dense", "pconv-8p-c0.72"]
    assert dense["train_images"] == pruned["train_images"] == 256
    assert dense["weights_3x3_kept"] == dense["weights_3x3_total"]
    assert 7.0 < pruned["compression_3x3"] < 9.0
    assert len(pruned["val_accuracy_per_epoch"]) == 2
    table = (tmp_path / "accuracy.md").read_text()
    assert "256 training images" in table and "pruning_epochs=1" in table
    assert "update_every=default (256 per phase)" in table
    assert "| pconv-8p-c0.72 |" in table


@pytest.mark.slow
def test_variants_run_separately_merge_into_one_table(tmp_path):
    out = ["--out", str(tmp_path), "--merge"]
    # Not the default allocation: the dense run's default must not overwrite it.
    pruned = run_benchmark(*TINY, "--variants", "pconv-8p-c0.72", "--allocation", "uniform", *out)
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    dense = run_benchmark(*TINY, "--variants", "dense", *out)
    assert dense.returncode == 0, dense.stderr[-3000:]
    payload = json.loads((tmp_path / "accuracy.json").read_text())
    assert [r["variant"] for r in payload["results"]] == ["dense", "pconv-8p-c0.72"]
    assert payload["config"]["variants"] == ["dense", "pconv-8p-c0.72"]
    assert payload["config"]["allocation"] == "uniform"  # the pruned run's settings stay
    table = (tmp_path / "accuracy.md").read_text()
    assert "connectivity allocation 'uniform'" in table
    assert table.index("| dense |") < table.index("| pconv-8p-c0.72 |")

    other = run_benchmark(*TINY[:-2], "--variants", "pconv-8p-c0.50", *out)
    assert other.returncode != 0
    assert "pruning_epochs: 1 there, None now" in other.stderr
    assert "Epoch 1/" not in other.stdout  # refused before training
    assert len(json.loads((tmp_path / "accuracy.json").read_text())["results"]) == 2


def run_short_benchmark(*args):
    return run_benchmark(*args, script="accuracy_short.py")


@pytest.mark.slow
def test_short_budget_protocol_reports_seeds_and_merges(tmp_path):
    tiny = ["--epochs", "2", "--train-size", "256", "--widths", "8", "16", "16"]
    out = ["--out", str(tmp_path), "--checkpoints", str(tmp_path / "ckpt"), "--merge"]
    first = run_short_benchmark(
        *tiny, "--networks", "plain", "--seeds", "0", "1", "--variants", "dense", "default", *out
    )
    assert first.returncode == 0, first.stderr[-3000:]
    variants = ["admm", "unified", "act-0.3"]
    second = run_short_benchmark(
        *tiny, "--networks", "plain", "--seeds", "1", "--variants", *variants, *out
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "dense training" not in second.stdout  # the seed's checkpoint was reused
    results = json.loads((tmp_path / "accuracy_short.json").read_text())["results"]
    assert sorted((r["seed"], r["variant"]) for r in results) == [
        (0, "default"), (0, "dense"), (1, "act-0.3"), (1, "admm"), (1, "default"), (1, "dense"),
        (1, "unified"),
    ]  # fmt: skip
    by_key = {(r["seed"], r["variant"]): r for r in results}
    assert by_key[(0, "dense")]["compression_3x3"] == 1.0
    assert 6.0 < by_key[(0, "default")]["compression_3x3"] < 9.0
    table = (tmp_path / "accuracy_short.md").read_text()
    machine = by_key[(0, "dense")]["machine"]
    assert machine and {r["machine"] for r in results} == {machine}
    plain = f"| plain | {machine} |"
    mean = 100 * (by_key[(0, "dense")]["test_accuracy"] + by_key[(1, "dense")]["test_accuracy"]) / 2
    assert f"{plain} dense | 2 | 1.00x | - | - | {mean:.2f} ± " in table
    masked = by_key[(1, "act-0.3")]["activation_masked"]
    assert 0.2 < masked < 0.4 and f"{plain} act-0.3 | 1 | 1.00x | - | {masked:.1%} |" in table
    unified = by_key[(1, "unified")]["kernels_unified"]
    assert unified > 0 and f"{unified} 3x3 kernels" in table
    assert f"{plain} unified | 1 | " in table
    # ADMM against dense and against the defaults, seed 1's runs paired
    points = lambda a, b: f"{100 * (a - b):+.2f}".lstrip("+")  # noqa: E731
    admm = by_key[(1, "admm")]["test_accuracy"]
    vs_dense = points(admm, by_key[(1, "dense")]["test_accuracy"])
    vs_default = points(admm, by_key[(1, "default")]["test_accuracy"])
    assert f"{plain} admm | 1 |" in table
    assert f"% | {vs_dense} ± 0.00 | {vs_default} ± 0.00 | {100 * admm:.2f} |" in table

    other = run_short_benchmark("--epochs", "1", *tiny[2:], "--seeds", "0", *out)
    assert other.returncode != 0 and "other settings" in other.stderr
