# Finds omniflux's dependencies. Each is a Debian 12 package; a missing one is a configure error
# that names the package to install.

function(omniflux_missing what package)
  message(FATAL_ERROR "omniflux: ${what} not found. On Debian 12: apt-get install ${package} "
                      "(or run ./scripts/setup.sh).")
endfunction()

find_package(Torch QUIET)
if(NOT Torch_FOUND)
  omniflux_missing("LibTorch (TorchConfig.cmake)" "libtorch-dev")
endif()
# TORCH_CXX_FLAGS carries the C++ ABI flag LibTorch was built with.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

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
# stb is used header-only: src/io/stb_impl.c compiles the implementation we need.
find_path(OMNIFLUX_STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb)
if(NOT OMNIFLUX_STB_INCLUDE_DIR OR NOT EXISTS "${OMNIFLUX_STB_INCLUDE_DIR}/stb_image_write.h")
  omniflux_missing("stb_image.h / stb_image_write.h" "libstb-dev")
endif()

# Everything the library needs privately, in one interface target. sentencepiece is not in it:
# libsentencepiece exports a bundled protobuf-lite whose symbols clash with the libprotobuf that
# LibTorch loads (a crash in protobuf's static initialisers), so it is only ever loaded in
# isolation, through a plugin opened with RTLD_LOCAL | RTLD_DEEPBIND.
add_library(omniflux_private_deps INTERFACE)
target_link_libraries(omniflux_private_deps INTERFACE
  nlohmann_json::nlohmann_json PkgConfig::OMNIFLUX_PCRE2 PkgConfig::OMNIFLUX_UTF8PROC ${CMAKE_DL_LIBS})
target_include_directories(omniflux_private_deps SYSTEM INTERFACE ${OMNIFLUX_STB_INCLUDE_DIR})
