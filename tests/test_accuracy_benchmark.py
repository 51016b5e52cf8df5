"""The accuracy benchmark script runs end to end at a tiny scale and reports what it trained."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_accuracy_benchmark_writes_its_results(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "accuracy.py"),
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
            "--variants",
            "dense",
            "pconv-8p-c0.72",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "accuracy.json").read_text())
    dense, pruned = payload["results"]
    assert payload["config"]["pruning_epochs"] == 1
    assert [dense["variant"], pruned["variant"]] == ["dense", "pconv-8p-c0.72"]
    assert dense["train_images"] == pruned["train_images"] == 256
    assert dense["weights_3x3_kept"] == dense["weights_3x3_total"]
    assert 7.0 < pruned["compression_3x3"] < 9.0
    assert len(pruned["val_accuracy_per_epoch"]) == 2
    table = (tmp_path / "accuracy.md").read_text()
    assert "256 training images" in table and "pruning_epochs=1" in table
    assert "| pconv-8p-c0.72 |" in table
