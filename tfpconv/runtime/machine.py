"""Facts about the machine that measurements are tagged with."""

from __future__ import annotations

import functools
import platform
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
