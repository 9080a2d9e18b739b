# Finds omniflux's dependencies. Each is a Debian 12 package; a missing one is a configure error
# that names the package to install.

function(omniflux_missing what package)
  message(FATAL_ERROR "omniflux: ${what} not found. On Debian 12: apt-get install ${package} "
                      "(or run ./scripts/setup.sh).")
endfunction()

# LibTorch: the one scripts/setup.sh installs (PyPI's torch wheel in a virtual environment under
# ~/.cache/omniflux, shared by every clone), unless Torch_DIR or CMAKE_PREFIX_PATH names another.
set(OMNIFLUX_TORCH_PIN "2.11.0" CACHE STRING "torch version scripts/setup.sh installs and CMake looks for")
if(DEFINED ENV{OMNIFLUX_CACHE_DIR})
  set(_omniflux_cache "$ENV{OMNIFLUX_CACHE_DIR}")
elseif(DEFINED ENV{XDG_CACHE_HOME})
  set(_omniflux_cache "$ENV{XDG_CACHE_HOME}/omniflux")
else()
  set(_omniflux_cache "$ENV{HOME}/.cache/omniflux")
endif()
file(GLOB _omniflux_torch_hints "${_omniflux_cache}/torch-${OMNIFLUX_TORCH_PIN}/lib/python3*/site-packages/torch/share/cmake/Torch")
# The Python of that environment, where scripts/setup.sh also installs the Python test clients.
find_program(OMNIFLUX_PYTHON python PATHS "${_omniflux_cache}/torch-${OMNIFLUX_TORCH_PIN}/bin" NO_DEFAULT_PATH)

# CUDA architectures for LibTorch's CUDA flags and our own .cu files: 9.0 (H100/H200) by default.
set(OMNIFLUX_CUDA_ARCHS "9.0" CACHE STRING "CUDA compute capabilities to build for, e.g. \"8.9;9.0\"")
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "${OMNIFLUX_CUDA_ARCHS}")
endif()

# LibTorch's CUDA config warns about (and ignores) CMAKE_CUDA_ARCHITECTURES; our own target sets it.
unset(CMAKE_CUDA_ARCHITECTURES CACHE)
find_package(Torch CONFIG QUIET HINTS ${_omniflux_torch_hints})
if(NOT Torch_FOUND)
  message(FATAL_ERROR "omniflux: LibTorch not found. Run ./scripts/setup.sh (it installs torch "
                      "${OMNIFLUX_TORCH_PIN} from PyPI into ${_omniflux_cache}), or pass -DTorch_DIR=.../share/cmake/Torch.")
endif()
# LibTorch 2.4 or newer: fused attention with a scale, float8 dtypes, _scaled_mm. Debian's 1.13 is
# not supported any more.
if(DEFINED Torch_VERSION AND Torch_VERSION VERSION_LESS 2.4)
  message(FATAL_ERROR "omniflux: LibTorch ${Torch_VERSION} is too old (found in ${Torch_DIR}); 2.4 or newer is needed.")
endif()
# TORCH_CXX_FLAGS carries the C++ ABI flag LibTorch was built with.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")
# A CUDA build of LibTorch gives the CUDA path (streams, pinned memory, fp8 matrix products); nvcc,
# when present, also compiles our own kernels (src/**/*.cu).
set(OMNIFLUX_WITH_CUDA OFF)
if(TARGET torch_cuda OR TARGET c10_cuda)
  set(OMNIFLUX_WITH_CUDA ON)
endif()
message(STATUS "omniflux: LibTorch ${Torch_VERSION} from ${Torch_DIR}; CUDA ${OMNIFLUX_WITH_CUDA}, archs ${OMNIFLUX_CUDA_ARCHS}")

find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  omniflux_missing("nlohmann_json" "nlohmann-json3-dev")
endif()

find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  omniflux_missing("pkg-config" "pkg-config")
endif()
pkg_check_modules(OMNIFLUX_SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
if(NOT OMNIFLUX_SENTENCEPIECE_FOUND)
  omniflux_missing("sentencepiece" "libsentencepiece-dev")
endif()
pkg_check_modules(OMNIFLUX_PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
if(NOT OMNIFLUX_PCRE2_FOUND)
  omniflux_missing("PCRE2 (libpcre2-8)" "libpcre2-dev")
endif()
pkg_check_modules(OMNIFLUX_UTF8PROC QUIET IMPORTED_TARGET libutf8proc)
if(NOT OMNIFLUX_UTF8PROC_FOUND)
  omniflux_missing("utf8proc" "libutf8proc-dev")
endif()
# Image decoding: libpng, libjpeg-turbo and libwebp, which are fuzzed continuously upstream.
pkg_check_modules(OMNIFLUX_PNG QUIET IMPORTED_TARGET libpng)
if(NOT OMNIFLUX_PNG_FOUND)
  omniflux_missing("libpng" "libpng-dev")
endif()
pkg_check_modules(OMNIFLUX_JPEG QUIET IMPORTED_TARGET libjpeg)
if(NOT OMNIFLUX_JPEG_FOUND)
  omniflux_missing("libjpeg-turbo (libjpeg)" "libjpeg62-turbo-dev")
endif()
pkg_check_modules(OMNIFLUX_WEBP QUIET IMPORTED_TARGET libwebp)
if(NOT OMNIFLUX_WEBP_FOUND)
  omniflux_missing("libwebp" "libwebp-dev")
endif()
# stb is used header-only, for the PNG writer: src/io/stb_impl.c compiles stb_image_write.
find_path(OMNIFLUX_STB_INCLUDE_DIR stb_image_write.h PATH_SUFFIXES stb)
if(NOT OMNIFLUX_STB_INCLUDE_DIR)
  omniflux_missing("stb_image_write.h" "libstb-dev")
endif()

# Everything the library needs privately, in one interface target. sentencepiece is not in it:
# libsentencepiece exports a bundled protobuf-lite whose symbols clash with the libprotobuf that
# LibTorch loads (a crash in protobuf's static initialisers), so it is only ever loaded in
# isolation, through a plugin opened with RTLD_LOCAL | RTLD_DEEPBIND.
add_library(omniflux_private_deps INTERFACE)
target_link_libraries(omniflux_private_deps INTERFACE
  nlohmann_json::nlohmann_json PkgConfig::OMNIFLUX_PCRE2 PkgConfig::OMNIFLUX_UTF8PROC
  PkgConfig::OMNIFLUX_PNG PkgConfig::OMNIFLUX_JPEG PkgConfig::OMNIFLUX_WEBP ${CMAKE_DL_LIBS})
target_include_directories(omniflux_private_deps SYSTEM INTERFACE ${OMNIFLUX_STB_INCLUDE_DIR})

# cpp-httplib for omniflux-server and its tests. Debian's libcpp-httplib-dev is the compiled
# (split) build: httplib.h only declares, libcpp-httplib.so implements, built with OpenSSL, zlib and
# Brotli on; the pkg-config flags carry the matching CPPHTTPLIB_*_SUPPORT defines, which change
# class layouts and must agree with the library.
if(OMNIFLUX_BUILD_TOOLS OR OMNIFLUX_BUILD_TESTS)
  pkg_check_modules(OMNIFLUX_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
  if(NOT OMNIFLUX_HTTPLIB_FOUND)
    omniflux_missing("cpp-httplib" "libcpp-httplib-dev")
  endif()
endif()
