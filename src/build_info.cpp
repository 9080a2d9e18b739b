#include "omniflux/build_info.h"

#include <cstdio>
#include <sstream>

#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/Version.h>
#include <torch/version.h>
#if OMNIFLUX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace omniflux {

BuildInfo build_info() {
  BuildInfo b;
  b.version = OMNIFLUX_VERSION_STRING;
  b.torch_version = TORCH_VERSION;
  b.cuda_compiled = OMNIFLUX_WITH_CUDA;
  b.cuda_kernels = OMNIFLUX_WITH_NVCC;
  b.cuda_archs = OMNIFLUX_CUDA_ARCHS_STRING;
  b.devices.push_back("cpu");
  // ATen exports its dispatch level only through the config text: "CPU capability usage: AVX2".
  const std::string config = at::show_config();
  const std::string key = "CPU capability usage: ";
  const size_t at_key = config.find(key);
  if (at_key != std::string::npos) {
    const size_t start = at_key + key.size();
    b.cpu_capability = config.substr(start, config.find('\n', start) - start);
  }
  b.cpu_threads = at::get_num_threads();
  // Asking the hooks never throws without a driver or a GPU: it gives 0.
  b.cuda_devices = at::detail::getCUDAHooks().deviceCount();
#if OMNIFLUX_WITH_CUDA
  for (int i = 0; i < b.cuda_devices; ++i) {
    const cudaDeviceProp* p = at::cuda::getDeviceProperties(i);
    char line[256];
    std::snprintf(line, sizeof line, "cuda:%d %s (sm_%d%d, %.1f GiB)", i, p->name, p->major, p->minor,
                  p->totalGlobalMem / double(1ull << 30));
    b.devices.push_back(line);
  }
#endif
  return b;
}

std::string build_info_text() {
  const BuildInfo b = build_info();
  std::ostringstream s;
  s << "omniflux " << b.version << "\n"
    << "libtorch: " << b.torch_version << "\n"
    << "cuda: " << (b.cuda_compiled ? "compiled in, archs " + b.cuda_archs : std::string("not compiled in"))
    << (b.cuda_compiled ? (b.cuda_kernels ? ", omniflux kernels built" : ", no omniflux kernels (no nvcc)") : "")
    << "\n"
    << "cpu: " << b.cpu_capability << ", " << b.cpu_threads << " threads\n"
    << "devices:";
  for (const auto& d : b.devices) s << " [" << d << "]";
  s << "\n";
  return s.str();
}

}  // namespace omniflux
