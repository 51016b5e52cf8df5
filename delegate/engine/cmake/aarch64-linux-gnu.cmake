# Cross build for 64-bit Arm with Debian's g++-aarch64-linux-gnu; run the results with
# qemu-aarch64 -L /usr/aarch64-linux-gnu.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Debian's cross sysroot, plus Debian's arm64 pthreadpool, which scripts/setup.sh unpacks into the
# repository's build/aarch64-deps (override with -DTFPCONV_AARCH64_DEPS=<dir>). The test programs
# find libpthreadpool.so.0 through the RPATH CMake gives them.
set(TFPCONV_AARCH64_DEPS "${CMAKE_CURRENT_LIST_DIR}/../../../build/aarch64-deps" CACHE PATH
    "Debian arm64 packages unpacked for the cross build (scripts/setup.sh)")
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu "${TFPCONV_AARCH64_DEPS}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
