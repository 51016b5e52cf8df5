"""Builds the delegate's pattern-convolution engine (delegate/engine, CMake) and runs its GoogleTest
suite: a normal build, an ASan + UBSan build, and an aarch64 cross build (NEON kernels) run under
qemu-aarch64. Build trees are kept under build/engine-tests/ so later runs are incremental.

The kernel variants of an instruction set this CPU lacks (AVX-512 on many x86 machines) cannot run
here: the suite reports them as a skipped test, and ``test_engine_isa_variants`` turns that into a
pytest skip, so it shows in the summary."""

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "delegate" / "engine"
BUILD_ROOT = Path(os.environ.get("TFPCONV_ENGINE_BUILD_DIR", ROOT / "build" / "engine-tests"))
JOBS = os.environ.get("TFPCONV_BUILD_JOBS", "2")
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"


def _run(cmd, cwd=None, env=None, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail}")
    return proc.stdout


def _build(name, *cmake_args):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed (scripts/setup.sh)")
    build = BUILD_ROOT / name
    _run(["cmake", "-S", ENGINE, "-B", build, *cmake_args])
    _run(["cmake", "--build", build, "-j", JOBS], timeout=1500)
    return build


def _check_gtest_output(out):
    assert "[  PASSED  ]" in out, out[-3000:]
    assert "FAILED" not in out, out[-3000:]


@pytest.fixture(scope="module")
def native_run():
    """(build directory, output) of the native build's whole suite, run once for this module."""
    build = _build("native", "-DCMAKE_BUILD_TYPE=Release", "-DTFPCONV_ENGINE_BENCH=ON")
    return build, _run([build / "tfpconv_engine_test"])


def test_engine_native(native_run):
    build, out = native_run
    _check_gtest_output(out)
    assert (build / "tfpconv_engine_bench").exists()


X86_ISAS = ("avx2", "avx512")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction sets")
@pytest.mark.parametrize("isa", X86_ISAS)
def test_engine_isa_variants(native_run, isa):
    """Every kernel variant of ``isa`` ran and passed, or the suite said why not (a pytest skip)."""
    _, out = native_run
    not_run = re.search(rf"^{isa}: \d+ variants not run: .*$", out, re.MULTILINE)
    if not_run:
        pytest.skip(not_run.group(0))
    ok_line = rf"^\[       OK \] Kernels/VariantTest\.RandomShapes/{isa}_"
    passed = re.findall(ok_line, out, re.MULTILINE)
    assert passed, f"no {isa} kernel variant ran:\n{out[-3000:]}"
    assert not re.search(rf"FAILED .*Kernels/VariantTest\.\w+/{isa}_", out)


def test_engine_sanitizers():
    flags = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    build = _build(
        "asan-ubsan",
        "-DCMAKE_BUILD_TYPE=Debug",
        f"-DCMAKE_CXX_FLAGS={flags} -O1",
        f"-DCMAKE_EXE_LINKER_FLAGS={flags}",
        "-DTFPCONV_ENGINE_BENCH=OFF",
    )
    env = dict(
        os.environ,
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
    )
    _check_gtest_output(_run([build / "tfpconv_engine_test"], env=env))


def test_engine_aarch64_neon_under_qemu():
    for tool in ("aarch64-linux-gnu-g++", "aarch64-linux-gnu-gcc", "qemu-aarch64"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/setup.sh)")
    build = _build(
        "aarch64",
        f"-DCMAKE_TOOLCHAIN_FILE={ENGINE / 'cmake' / 'aarch64-linux-gnu.cmake'}",
        "-DCMAKE_BUILD_TYPE=Release",
        "-DTFPCONV_ENGINE_BENCH=OFF",
    )
    # The thread pool is pthreadpool here too (Debian's arm64 package, scripts/setup.sh).
    dynamic = _run(["readelf", "-d", build / "tfpconv_engine_test"])
    assert "libpthreadpool.so" in dynamic
    out = _run(["qemu-aarch64", "-L", AARCH64_SYSROOT, build / "tfpconv_engine_test"], timeout=900)
    _check_gtest_output(out)
    assert "neon" in out  # the NEON variants ran
