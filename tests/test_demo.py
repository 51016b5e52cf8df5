"""The README's demo end to end, at a tiny scale: train, summary, convert with tuning, run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_trains_converts_and_runs_with_and_without_the_delegate(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "demo.py"),
            "--train-size",
            "1024",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert (tmp_path / "fashion_pconv.tflite").is_file()
    assert "test accuracy of the pattern-pruned model" in out
    assert re.search(r"conv\d_\d", out), "tfpconv.summary lists the pruned layers"

    planned = re.search(r"(\d+) convolutions planned, (\d+) skipped", out)
    # The callback leaves the first convolution dense: TFLite keeps it.
    assert planned is not None and planned.groups() == ("5", "1"), out[-2000:]
    assert re.search(r"plain TFLite \(XNNPACK\):\s+[\d.]+ ms / image", out)
    delegated = re.search(r"tfpconv delegate:\s+[\d.]+ ms / image .*?(\d+) of 5 convolutions", out)
    assert delegated is not None, out[-2000:]

    agreement = re.search(r"predictions agree on ([\d.]+)% .*max \|difference\| ([\d.e+-]+)", out)
    assert agreement is not None, out[-2000:]
    assert float(agreement.group(1)) == 100.0
    assert float(agreement.group(2)) < 1e-4
