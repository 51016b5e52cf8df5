"""Peak memory of loading and running a model once, measured in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PEAK_SCRIPT = """
import sys
import numpy as np
from tfpconv.runtime.interpreter import Interpreter

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current resident size
before = status("VmRSS")
interpreter = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]),
                                  use_delegate=sys.argv[3] == "1")
interpreter.allocate_tensors()
for d in interpreter.get_input_details():
    interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
interpreter.invoke()
print(status("VmHWM") - before)
"""


def peak_memory_mb(model_path: str | os.PathLike[str], threads: int, use_delegate: bool) -> float:
    """Peak resident memory added by loading and running the model once, in a fresh process."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_SCRIPT,
            os.fspath(model_path),
            str(threads),
            "1" if use_delegate else "0",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    if result.returncode != 0:
        raise RuntimeError(f"peak memory run failed: {result.stderr.strip()[-500:]}")
    return float(result.stdout.strip().splitlines()[-1])
