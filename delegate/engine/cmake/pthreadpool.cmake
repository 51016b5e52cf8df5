# pthreadpool, the engine's only thread pool, on every target:
# - Debian (native): libpthreadpool-dev;
# - Debian's aarch64 cross build: the same Debian package for arm64, which scripts/setup.sh unpacks
#   into build/aarch64-deps (the toolchain file adds it to CMAKE_FIND_ROOT_PATH);
# - the Android NDK, which has no pthreadpool: built from source, the commit Debian packages
#   (-DTFPCONV_PTHREADPOOL_SOURCE_DIR=<checkout>, else fetched from GitHub at configure time).
# Defines the imported target tfpconv::pthreadpool.
include_guard(GLOBAL)

set(TFPCONV_PTHREADPOOL_SOURCE_DIR "" CACHE PATH
    "pthreadpool sources to build when no installed pthreadpool is found (Android NDK builds)")
set(TFPCONV_PTHREADPOOL_COMMIT 1787867f6183f056420e532eec640cba25efafea)  # Debian 12's snapshot

find_path(PTHREADPOOL_INCLUDE_DIR pthreadpool.h)
find_library(PTHREADPOOL_LIBRARY pthreadpool)
if(PTHREADPOOL_INCLUDE_DIR AND PTHREADPOOL_LIBRARY)
  add_library(tfpconv::pthreadpool UNKNOWN IMPORTED)
  set_target_properties(tfpconv::pthreadpool PROPERTIES
    IMPORTED_LOCATION "${PTHREADPOOL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${PTHREADPOOL_INCLUDE_DIR}")
  message(STATUS "tfpconv_engine: pthreadpool ${PTHREADPOOL_LIBRARY}")
elseif(TFPCONV_PTHREADPOOL_SOURCE_DIR OR ANDROID)
  set(PTHREADPOOL_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(PTHREADPOOL_BUILD_BENCHMARKS OFF CACHE BOOL "" FORCE)
  set(PTHREADPOOL_LIBRARY_TYPE static CACHE STRING "" FORCE)
  if(TFPCONV_PTHREADPOOL_SOURCE_DIR)
    add_subdirectory("${TFPCONV_PTHREADPOOL_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/pthreadpool"
                     EXCLUDE_FROM_ALL)
  else()
    include(FetchContent)
    FetchContent_Declare(pthreadpool GIT_REPOSITORY https://github.com/Maratyszcza/pthreadpool.git
                         GIT_TAG ${TFPCONV_PTHREADPOOL_COMMIT})
    FetchContent_MakeAvailable(pthreadpool)
  endif()
  set_target_properties(pthreadpool PROPERTIES POSITION_INDEPENDENT_CODE ON)
  add_library(tfpconv::pthreadpool ALIAS pthreadpool)
  message(STATUS "tfpconv_engine: pthreadpool built from source")
else()
  message(FATAL_ERROR
    "tfpconv_engine: pthreadpool not found (the engine's thread pool on every target). On Debian "
    "run `bash scripts/setup.sh`: it installs libpthreadpool-dev and, for the aarch64 cross build, "
    "unpacks Debian's arm64 package into build/aarch64-deps. Elsewhere pass "
    "-DTFPCONV_PTHREADPOOL_SOURCE_DIR=<pthreadpool checkout> to build it from source.")
endif()
