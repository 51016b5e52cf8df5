# libxsmm, whose JIT code generator makes the dense path's GEMM kernels (dense_conv.cc): Debian's
# libxsmm-dev (x86-64 only, a static library). Defines the imported target tfpconv::libxsmm and
# sets TFPCONV_HAVE_LIBXSMM when found; without it (other architectures, or not installed) the
# engine builds anyway and DenseConv::Create says that dense convolutions need libxsmm.
include_guard(GLOBAL)

option(TFPCONV_ENGINE_USE_LIBXSMM "Build the dense path with libxsmm when found (x86-64)" ON)
set(TFPCONV_HAVE_LIBXSMM OFF)
if(TFPCONV_ENGINE_USE_LIBXSMM AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  find_path(LIBXSMM_INCLUDE_DIR libxsmm_generator.h)
  find_library(LIBXSMM_LIBRARY NAMES xsmm)
  if(LIBXSMM_INCLUDE_DIR AND LIBXSMM_LIBRARY)
    add_library(tfpconv::libxsmm UNKNOWN IMPORTED)
    set_target_properties(tfpconv::libxsmm PROPERTIES
      IMPORTED_LOCATION "${LIBXSMM_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${LIBXSMM_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${CMAKE_DL_LIBS};m"
      # Keep libxsmm's symbols out of the delegate's dynamic symbol table, so another libxsmm in
      # the process can neither interpose on ours nor be interposed on.
      INTERFACE_LINK_OPTIONS "LINKER:--exclude-libs,libxsmm.a")
    set(TFPCONV_HAVE_LIBXSMM ON)
    message(STATUS "tfpconv_engine: libxsmm ${LIBXSMM_LIBRARY} (dense path)")
  else()
    message(STATUS "tfpconv_engine: libxsmm not found (apt-get install libxsmm-dev): no dense path")
  endif()
endif()
