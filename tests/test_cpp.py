"""Drives the delegate's C++ builds and tests from pytest, so ``python3 -m pytest`` runs everything.

* a normal build (g++): the GoogleTest suites (with the ABI layout test against TFLite's official
  headers from ``npm pack react-native-fast-tflite@0.3.1``) and a bounded mutation fuzz run;
* an AddressSanitizer + UndefinedBehaviorSanitizer build (clang): the same tests and the plan
  reader's libFuzzer harness for a bounded time;
* an aarch64 cross build (g++-aarch64-linux-gnu) of the delegate library (NEON engine), whose test
  programs run under qemu-aarch64;
* the offline Bazel build (Debian's bazel-bootstrap): //delegate:tfpconv_delegate, its tests and
  the engine's test (//delegate/engine:tfpconv_engine_test).

The engine's own tests (delegate/engine/tests) are driven by tests/test_engine_cpp.py; configure
with -DTFPCONV_ENGINE_TESTS=ON to add them to these builds' ctest runs.

Build trees live in ``build/cpp-*`` and are reused, so a second run only rebuilds what changed.
Each build uses at most two compile jobs (``TFPCONV_CPP_JOBS`` overrides).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
JOBS = os.environ.get("TFPCONV_CPP_JOBS", "2")
NPM_PACKAGE = "react-native-fast-tflite@0.3.1"
HEADERS_IN_PACKAGE = "package/ios/TensorFlowLiteC.framework/Headers"
FUZZ_SECONDS = os.environ.get("TFPCONV_FUZZ_SECONDS", "30")
AARCH64_TOOLCHAIN = REPO / "delegate" / "engine" / "cmake" / "aarch64-linux-gnu.cmake"


def _run(command, cwd=REPO, env=None, timeout=1800):
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} failed:\n{result.stdout[-12000:]}")
    return result.stdout


def _need(*tools):
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run `bash scripts/setup.sh`")


def _configure_and_build(build_dir, *definitions, env=None, targets=()):
    _need("cmake", "ninja")
    _run(
        [
            "cmake",
            "-G",
            "Ninja",
            "-S",
            REPO,
            "-B",
            build_dir,
            # The engine's own tests and benchmark are built by tests/test_engine_cpp.py.
            "-DTFPCONV_ENGINE_TESTS=OFF",
            "-DTFPCONV_ENGINE_BENCH=OFF",
            *[f"-D{d}" for d in definitions],
        ],
        env=env,
    )
    target_args = ["--target", *targets] if targets else []
    _run(["cmake", "--build", build_dir, "-j", JOBS, *target_args], env=env)


def _ctest(build_dir, env=None, timeout=1200):
    output = _run(
        ["ctest", "--test-dir", Path(build_dir) / "delegate", "--output-on-failure", "-j", JOBS],
        env=env,
        timeout=timeout,
    )
    assert "100% tests passed" in output, output[-4000:]
    return output


@pytest.fixture(scope="module")
def tflite_headers():
    """TFLite 2.15's official C headers from the npm package (for checking layouts only)."""
    cache = BUILD / "tflite-headers"
    headers = cache / HEADERS_IN_PACKAGE
    if not (headers / "common.h").is_file():
        _need("npm")
        cache.mkdir(parents=True, exist_ok=True)
        _run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=cache, timeout=600)
        tarball = next(cache.glob("react-native-fast-tflite-*.tgz"))
        with tarfile.open(tarball) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(HEADERS_IN_PACKAGE)]
            archive.extractall(cache, members=members, filter="data")
        tarball.unlink()
    assert (headers / "common.h").is_file()
    return headers


def test_cpp_unit_tests_and_abi_layouts(tflite_headers):
    build_dir = BUILD / "cpp-tests"
    _configure_and_build(
        build_dir,
        "CMAKE_BUILD_TYPE=Release",
        "TFPCONV_BUILD_TESTS=ON",
        f"TFPCONV_TFLITE_HEADERS={tflite_headers}",
    )
    output = _ctest(build_dir)
    assert "Abi.LayoutsMatchTheOfficialHeaders" in output
    assert "plan_fuzz_driver" in output


def test_cpp_tests_under_asan_ubsan_with_libfuzzer(tflite_headers):
    _need("clang", "clang++")
    build_dir = BUILD / "cpp-asan"
    _configure_and_build(
        build_dir,
        "CMAKE_BUILD_TYPE=RelWithDebInfo",
        "CMAKE_C_COMPILER=clang",
        "CMAKE_CXX_COMPILER=clang++",
        "TFPCONV_BUILD_TESTS=ON",
        "TFPCONV_SANITIZE=ON",
        "TFPCONV_FUZZ=ON",
        f"TFPCONV_FUZZ_SECONDS={FUZZ_SECONDS}",
        f"TFPCONV_TFLITE_HEADERS={tflite_headers}",
    )
    output = _ctest(
        build_dir,
        env={
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:strict_string_checks=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        },
    )
    assert "plan_fuzz_libfuzzer" in output


def test_aarch64_cross_build_runs_under_qemu():
    _need("aarch64-linux-gnu-g++", "qemu-aarch64")
    build_dir = BUILD / "cpp-aarch64"
    _configure_and_build(
        build_dir,
        f"CMAKE_TOOLCHAIN_FILE={AARCH64_TOOLCHAIN}",
        "CMAKE_BUILD_TYPE=Release",
        "TFPCONV_BUILD_TESTS=ON",
    )
    library = build_dir / "delegate" / "libtfpconv_delegate.so"
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, (
        "not an aarch64 ELF"
    )
    _ctest(build_dir, timeout=1800)


BAZEL_TESTS = (
    "//delegate:delegate_tests",
    "//delegate:plan_fuzz_driver",
    "//delegate/engine:tfpconv_engine_test",
)


def test_bazel_build_offline():
    """Debian's bazel-bootstrap builds the library and runs the tests with no network."""
    _need("bazel")
    output = _run(
        [
            "bazel",
            "--batch",
            "test",
            f"--jobs={JOBS}",
            "//delegate:all",
            "//delegate:tfpconv_delegate",
            "//delegate/engine:tfpconv_engine_test",
        ],
        timeout=1800,
    )
    assert f"{len(BAZEL_TESTS)} tests pass" in output, output[-4000:]
    for target in BAZEL_TESTS:
        assert any(line.startswith(target) and "PASSED" in line for line in output.splitlines()), (
            f"{target} did not pass:\n{output[-4000:]}"
        )
    library = REPO / "bazel-bin" / "delegate" / "libtfpconv_delegate.so"
    exported = _run(["nm", "-D", "--defined-only", library])
    assert "tflite_plugin_create_delegate" in exported
    assert "TfpconvDelegateCreate" in exported
