#pragma once
// What this omniflux was built with and what it sees now (`omniflux-inspect --version`).
#include <string>
#include <vector>

namespace omniflux {

struct BuildInfo {
  std::string version;            // omniflux
  std::string torch_version;      // LibTorch the library was compiled against
  bool cuda_compiled = false;     // LibTorch's CUDA part linked in
  bool cuda_kernels = false;      // our own .cu kernels compiled by nvcc
  std::string cuda_archs;         // e.g. "9.0"; empty without CUDA
  int cuda_devices = 0;           // visible now
  std::vector<std::string> devices;  // "cpu", then "cuda:0 NVIDIA H200 (sm_90, 139.8 GiB)", ...
  std::string cpu_capability;     // ATen's vectorisation level, e.g. "AVX2"
  int cpu_threads = 0;            // intra-op threads now
};

BuildInfo build_info();
// Several "key: value" lines, for --version.
std::string build_info_text();

}  // namespace omniflux
