# Finds omniflux's dependencies. Each is a Debian 12 package; a missing one is a configure error
# that names the package to install.

function(omniflux_missing what package)
  message(FATAL_ERROR "omniflux: ${what} not found. On Debian 12: apt-get install ${package} "
                      "(or run ./scripts/setup.sh).")
endfunction()

# LibTorch (and the torch environment's Python): cmake/OmnifluxTorch.cmake.
include(${CMAKE_CURRENT_LIST_DIR}/OmnifluxTorch.cmake)

find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  omniflux_missing("nlohmann_json" "nlohmann-json3-dev")
endif()

find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  omniflux_missing("pkg-config" "pkg-config")
endif()
# A pkg-config module as the imported target PkgConfig::<prefix>, or a fatal error naming the package.
macro(omniflux_require_pkg prefix module what package)
  pkg_check_modules(${prefix} QUIET IMPORTED_TARGET ${module})
  if(NOT ${prefix}_FOUND)
    omniflux_missing("${what}" "${package}")
  endif()
endmacro()
omniflux_require_pkg(OMNIFLUX_SENTENCEPIECE sentencepiece "sentencepiece" libsentencepiece-dev)
omniflux_require_pkg(OMNIFLUX_PCRE2 libpcre2-8 "PCRE2 (libpcre2-8)" libpcre2-dev)
omniflux_require_pkg(OMNIFLUX_UTF8PROC libutf8proc "utf8proc" libutf8proc-dev)
# Image decoding: libpng, libjpeg-turbo and libwebp, which are fuzzed continuously upstream.
omniflux_require_pkg(OMNIFLUX_PNG libpng "libpng" libpng-dev)
omniflux_require_pkg(OMNIFLUX_JPEG libjpeg "libjpeg-turbo (libjpeg)" libjpeg62-turbo-dev)
omniflux_require_pkg(OMNIFLUX_WEBP libwebp "libwebp" libwebp-dev)
# stb is used header-only, for the PNG writer: src/io/stb_impl.c compiles stb_image_write.
find_path(OMNIFLUX_STB_INCLUDE_DIR stb_image_write.h PATH_SUFFIXES stb)
if(NOT OMNIFLUX_STB_INCLUDE_DIR)
  omniflux_missing("stb_image_write.h" "libstb-dev")
endif()

# c10d's Gloo backend (the CPU path of omniflux::Parallel) is LibTorch's own build, but its header
# includes gloo's, which the torch wheel does not ship; Debian's libgloo-dev provides them (only
# opaque gloo handles cross the boundary, so the version need not match). Only src/distributed.cpp
# sees them.
option(OMNIFLUX_WITH_GLOO "Build the Gloo backend of omniflux::Parallel (CPU multi-process)" ON)
if(OMNIFLUX_WITH_GLOO)
  find_path(OMNIFLUX_GLOO_INCLUDE_DIR gloo/context.h)
  if(NOT OMNIFLUX_GLOO_INCLUDE_DIR)
    omniflux_missing("gloo headers (gloo/context.h)" "libgloo-dev")
  endif()
endif()
# NCCL for the CUDA path: nccl.h from the torch environment's nvidia-nccl wheel, or the system.
set(OMNIFLUX_WITH_NCCL OFF)
if(OMNIFLUX_WITH_CUDA)
  file(GLOB _omniflux_nccl_hints "${Torch_DIR}/../../../../nvidia/nccl/include")
  find_path(OMNIFLUX_NCCL_INCLUDE_DIR nccl.h HINTS ${_omniflux_nccl_hints})
  if(OMNIFLUX_NCCL_INCLUDE_DIR)
    set(OMNIFLUX_WITH_NCCL ON)
  endif()
endif()
message(STATUS "omniflux: distributed backends: gloo ${OMNIFLUX_WITH_GLOO}, nccl ${OMNIFLUX_WITH_NCCL}")

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
  omniflux_require_pkg(OMNIFLUX_HTTPLIB cpp-httplib "cpp-httplib" libcpp-httplib-dev)
endif()
