"""Facts about the machine that measurements are tagged with."""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path


class TableMismatchError(ValueError):
    """A measurement table (e.g. a latency table) was made on another machine or set-up."""


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_slug(cpu: str) -> str:
    """A short file-name tag of a CPU model: ``"amd-epyc"`` for "AMD EPYC 9R14",
    ``"intel-xeon"`` for "Intel(R) Xeon(R) Processor" (results of different CPUs side by side)."""
    words = re.sub(r"\((r|tm)\)", "", cpu.lower()).split()
    return "-".join(re.sub(r"[^a-z0-9]", "", w) for w in words[:2]) or "unknown-cpu"
