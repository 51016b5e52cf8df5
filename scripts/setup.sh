#!/usr/bin/env bash
# All set-up for a fresh Debian machine (root, Python 3.11, pip, apt): system packages, then tfpconv
# itself with its test extras. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # real data for the demo and the accuracy benchmark
  dataset-fashion-mnist
  # plan schema compiler and the delegate's C++ dependencies
  flatbuffers-compiler libflatbuffers-dev libpthreadpool-dev libcpuinfo-dev libxsmm-dev
  libgtest-dev libbenchmark-dev cmake ninja-build g++ make pkg-config
  # offline Bazel build, aarch64 cross build + emulation, sanitizers, JNI host test
  bazel-bootstrap g++-aarch64-linux-gnu qemu-user clang libclang-rt-14-dev
  openjdk-17-jdk-headless kotlin
  # a real database server for the distributed search tests (scripts/postgres.sh starts one)
  postgresql
)
# npm fetches TFLite's official C headers for the ABI layout test. Machines with NodeSource's nodejs
# already have it (and Debian's npm package conflicts with that nodejs): install it only if absent.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The aarch64 cross build (tests run it under qemu) links pthreadpool like every other target.
# Debian's arm64 package cannot be installed next to the amd64 one (libpthreadpool-dev is not
# Multi-Arch: same), so its two .debs are fetched from the Debian archive apt uses, checked against
# pinned SHA-256 sums, and unpacked into build/aarch64-deps (delegate/engine/cmake/
# aarch64-linux-gnu.cmake looks there).
python3 scripts/fetch_arm64_pthreadpool.py build/aarch64-deps

# Debian's own python3 marks its site-packages as externally managed (PEP 668); this script is the
# machine's set-up, so installing into it is intended.
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[test]"
echo "setup: done"
