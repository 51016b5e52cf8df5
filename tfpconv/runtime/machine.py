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


def cpu_slug(cpu: str, microarchitecture: str = "") -> str:
    """A short file-name tag of a CPU model: ``"amd-epyc"`` for "AMD EPYC 9R14",
    ``"intel-xeon"`` for "Intel(R) Xeon(R) Processor", ``"amd-epyc-zen5"`` with a known
    micro-architecture (results of different CPUs side by side)."""
    words = re.sub(r"\((r|tm)\)", "", cpu.lower()).split()
    slug = "-".join(re.sub(r"[^a-z0-9]", "", w) for w in words[:2]) or "unknown-cpu"
    return f"{slug}-{microarchitecture}" if microarchitecture else slug


# (vendor, family) -> [(first model, last model, name)]; the first matching range wins.
_MICROARCHITECTURES: dict[tuple[str, int], list[tuple[int, int, str]]] = {
    ("AuthenticAMD", 0x17): [(0x30, 0xFF, "zen2"), (0x00, 0x2F, "zen")],
    ("AuthenticAMD", 0x19): [
        (0x10, 0x1F, "zen4"),
        (0x60, 0x7F, "zen4"),
        (0xA0, 0xAF, "zen4"),
        (0x00, 0xFF, "zen3"),
    ],
    ("AuthenticAMD", 0x1A): [(0x00, 0xFF, "zen5")],
    ("GenuineIntel", 6): [
        (0x55, 0x55, "skylake-sp"),
        (0x6A, 0x6C, "icelake-sp"),
        (0x8F, 0x8F, "sapphirerapids"),
        (0xCF, 0xCF, "emeraldrapids"),
        (0xAD, 0xAE, "graniterapids"),
    ],
}


def microarchitecture_of(cpuinfo: str) -> str:
    """The cores' micro-architecture named by the vendor, family and model of a ``/proc/cpuinfo``
    text ("zen4", "zen5", "sapphirerapids", ...), or ``""`` where the table does not know them.
    Virtual machines often show only "AMD EPYC" as the model name; family and model remain."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    try:
        vendor, family, model = fields["vendor_id"], int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return ""
    for first, last, name in _MICROARCHITECTURES.get((vendor, family), []):
        if first <= model <= last:
            return name
    return ""


@functools.cache
def cpu_microarchitecture() -> str:
    """This machine's micro-architecture (see :func:`microarchitecture_of`), or ``""``."""
    try:
        return microarchitecture_of(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ""
