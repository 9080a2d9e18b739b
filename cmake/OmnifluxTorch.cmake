# Finds LibTorch for omniflux. Included by OmnifluxDependencies.cmake, and by python/CMakeLists.txt
# before it adds the engine as a subdirectory (pip install ./python), so that LibTorch's imported
# targets are visible to the Python module too; a second run finds the same package again.
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
