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
