"""Where ``tfpconv.delegate_path()`` finds the delegate library, and which ones it never returns.

A source checkout's ``build/`` also holds an aarch64 cross build and a sanitizer build of the same
library; neither loads into this Python, so neither may be returned.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tfpconv.runtime import library as runtime

LIBRARY = runtime.DELEGATE_LIBRARY
AARCH64 = 183


def host_machine() -> int:
    header = Path(sys.executable).resolve().read_bytes()[:20]
    assert header[:4] == b"\x7fELF", "these tests need an ELF host"
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def fake_library(path: Path, machine: int, extra: bytes = b"") -> Path:
    """A file with a 64-bit little-endian ELF header for `machine` (enough for the checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[16:18] = (3).to_bytes(2, "little")  # ET_DYN
    header[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(header) + b"\0" * 256 + extra)
    return path


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A fake source checkout (package directory + build trees) that runtime searches."""
    monkeypatch.setattr(runtime, "_PACKAGE_DIR", tmp_path / "tfpconv")
    monkeypatch.setattr(runtime, "_REPO_DIR", tmp_path)
    monkeypatch.delenv(runtime.PATH_ENV, raising=False)
    build = tmp_path / "build"
    return {
        "package": tmp_path / "tfpconv" / LIBRARY,
        "py3": build / "py3-none-linux_x86_64" / "delegate" / LIBRARY,
        "aarch64": build / "cpp-aarch64" / "delegate" / LIBRARY,
        "asan": build / "cpp-asan" / "delegate" / LIBRARY,
        "tests": build / "cpp-tests" / "delegate" / LIBRARY,
    }


def test_the_real_library_is_loadable_here():
    path = Path(runtime.delegate_path())
    assert path.name == LIBRARY
    assert runtime._unusable_reason(path) is None
    data = path.read_bytes()
    assert int.from_bytes(data[18:20], "little") == host_machine()
    assert b"__asan_init" not in data and b"libasan.so" not in data


def test_search_order_package_then_py3_build_then_other_builds(checkout):
    for path in checkout.values():
        fake_library(path, host_machine())
    candidates = runtime._candidates()
    position = {name: candidates.index(path) for name, path in checkout.items()}
    assert position["package"] == 0
    assert position["py3"] < min(position["aarch64"], position["asan"], position["tests"])


def test_package_copy_is_preferred(checkout):
    for name in ("aarch64", "asan", "tests", "py3"):
        fake_library(checkout[name], host_machine())
    fake_library(checkout["package"], host_machine())
    assert runtime.delegate_path() == str(checkout["package"])


def test_cross_and_sanitizer_builds_are_never_returned(checkout):
    # The aarch64 and ASan trees sort before cpp-tests, and nothing better exists.
    fake_library(checkout["aarch64"], AARCH64 if host_machine() != AARCH64 else 62)
    fake_library(checkout["asan"], host_machine(), extra=b"\0__asan_init\0__asan_report_load4\0")
    fake_library(checkout["tests"], host_machine())
    candidates = [checkout["aarch64"], checkout["asan"], checkout["tests"]]
    assert runtime._first_usable(candidates) == str(checkout["tests"])
    assert "built for" in runtime._unusable_reason(checkout["aarch64"])
    assert "sanitizer" in runtime._unusable_reason(checkout["asan"])


def test_gcc_sanitizer_build_linking_libasan_is_rejected(checkout):
    fake_library(checkout["asan"], host_machine(), extra=b"\0libasan.so.8\0libubsan.so.1\0")
    assert "sanitizer" in runtime._unusable_reason(checkout["asan"])


def test_only_unusable_builds_is_a_clear_error(checkout):
    fake_library(checkout["aarch64"], AARCH64 if host_machine() != AARCH64 else 62)
    fake_library(checkout["asan"], host_machine(), extra=b"__asan_init")
    with pytest.raises(FileNotFoundError) as error:
        runtime._first_usable([checkout["aarch64"], checkout["asan"]])
    message = str(error.value)
    assert "cpp-aarch64" in message and "built for" in message
    assert "cpp-asan" in message and "sanitizer" in message
    assert "pip install ." in message


def test_override_is_checked_for_the_architecture(checkout, monkeypatch, tmp_path):
    foreign = fake_library(tmp_path / "foreign.so", AARCH64 if host_machine() != AARCH64 else 62)
    monkeypatch.setenv(runtime.PATH_ENV, str(foreign))
    with pytest.raises(FileNotFoundError, match="built for"):
        runtime.delegate_path()
    monkeypatch.setenv(runtime.PATH_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="not a file"):
        runtime.delegate_path()
    # An explicit sanitizer build is the user's choice (with its runtime preloaded).
    asan = fake_library(tmp_path / "asan.so", host_machine(), extra=b"__asan_init")
    monkeypatch.setenv(runtime.PATH_ENV, str(asan))
    assert runtime.delegate_path() == str(asan.resolve())
