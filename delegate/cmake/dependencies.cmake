# Finds everything the delegate's build needs from the system and, when something is missing, stops
# at configure time with ONE message naming every missing Debian package (so `pip install .` on a
# machine without them says what to install instead of failing later in the compiler).
#
# Sets (cached) TFPCONV_FLATBUFFERS_INCLUDE_DIR, TFPCONV_FLATC, TFPCONV_FLATBUFFERS_VERSION and, for
# the engine, PTHREADPOOL_INCLUDE_DIR/PTHREADPOOL_LIBRARY and CPUINFO_INCLUDE_DIR/CPUINFO_LIBRARY.
include_guard(GLOBAL)

# Native builds link the CPU detection the tested library uses; a cross build (or
# -DTFPCONV_REQUIRE_SYSTEM_LIBS=OFF) may do without it (built-in detection). pthreadpool is needed
# everywhere: here it is only named with the other Debian packages a native build lacks; the
# engine finds it for every target (engine/cmake/pthreadpool.cmake).
if(CMAKE_CROSSCOMPILING)
  set(_tfpconv_require_default OFF)
else()
  set(_tfpconv_require_default ON)
endif()
option(TFPCONV_REQUIRE_SYSTEM_LIBS
       "Fail configuration when libpthreadpool-dev / libcpuinfo-dev are missing" ${_tfpconv_require_default})

set(_tfpconv_missing)

# A C++ compiler (checked before the language is enabled, so its absence is reported here too).
include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)  # also sets the library architecture (lib/x86_64-linux-gnu) for find_library
else()
  list(APPEND _tfpconv_missing g++)
endif()
set(_tfpconv_lib_hints "/usr/lib/${CMAKE_SYSTEM_PROCESSOR}-linux-gnu")

# FlatBuffers: the header-only reading side, and flatc to generate the plan's header for that
# version (the committed header only fits FlatBuffers 2.0.8, Debian 12's).
find_path(TFPCONV_FLATBUFFERS_INCLUDE_DIR flatbuffers/flatbuffers.h
          PATHS /usr/include /usr/local/include NO_CMAKE_FIND_ROOT_PATH)
set(TFPCONV_FLATBUFFERS_VERSION "")
if(TFPCONV_FLATBUFFERS_INCLUDE_DIR AND EXISTS "${TFPCONV_FLATBUFFERS_INCLUDE_DIR}/flatbuffers/base.h")
  file(STRINGS "${TFPCONV_FLATBUFFERS_INCLUDE_DIR}/flatbuffers/base.h" _tfpconv_fb_lines
       REGEX "#define FLATBUFFERS_VERSION_(MAJOR|MINOR|REVISION) ")
  set(_tfpconv_fb_parts)
  foreach(_part MAJOR MINOR REVISION)
    foreach(_line IN LISTS _tfpconv_fb_lines)
      if(_line MATCHES "FLATBUFFERS_VERSION_${_part} +([0-9]+)")
        list(APPEND _tfpconv_fb_parts "${CMAKE_MATCH_1}")
      endif()
    endforeach()
  endforeach()
  list(JOIN _tfpconv_fb_parts "." TFPCONV_FLATBUFFERS_VERSION)
else()
  list(APPEND _tfpconv_missing libflatbuffers-dev)
endif()

find_program(TFPCONV_FLATC flatc NO_CMAKE_FIND_ROOT_PATH)
if(NOT TFPCONV_FLATC AND NOT TFPCONV_FLATBUFFERS_VERSION VERSION_EQUAL "2.0.8")
  # Without flatc only the committed header is available, and it needs FlatBuffers 2.0.8.
  list(APPEND _tfpconv_missing flatbuffers-compiler)
endif()

# The engine's thread pool and CPU detection (x86 only), when required.
if(TFPCONV_REQUIRE_SYSTEM_LIBS)
  find_path(PTHREADPOOL_INCLUDE_DIR pthreadpool.h)
  find_library(PTHREADPOOL_LIBRARY pthreadpool HINTS ${_tfpconv_lib_hints})
  if(NOT PTHREADPOOL_INCLUDE_DIR OR NOT PTHREADPOOL_LIBRARY)
    list(APPEND _tfpconv_missing libpthreadpool-dev)
  endif()
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" AND
     (NOT DEFINED TFPCONV_ENGINE_USE_CPUINFO OR TFPCONV_ENGINE_USE_CPUINFO))
    find_path(CPUINFO_INCLUDE_DIR cpuinfo.h)
    find_library(CPUINFO_LIBRARY cpuinfo HINTS ${_tfpconv_lib_hints})
    if(NOT CPUINFO_INCLUDE_DIR OR NOT CPUINFO_LIBRARY)
      list(APPEND _tfpconv_missing libcpuinfo-dev)
    endif()
  endif()
endif()

if(_tfpconv_missing)
  list(JOIN _tfpconv_missing " " _tfpconv_missing_text)
  message(FATAL_ERROR
    "tfpconv: cannot build the C++ delegate, missing Debian packages: ${_tfpconv_missing_text}\n"
    "Run `bash scripts/setup.sh` (it installs them: apt-get install ${_tfpconv_missing_text}), "
    "then build again (e.g. pip install .).")
endif()
