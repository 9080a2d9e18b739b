#include "omniflux/runtime.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include <ATen/Parallel.h>
#if OMNIFLUX_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

#include "omniflux/distributed.h"
#include "omniflux/error.h"

namespace omniflux {

c10::Device RuntimeOptions::torch_device() const {
  try {
    return c10::Device(device);
  } catch (const std::exception&) {
    throw Error("invalid device", "RuntimeOptions::device", "cpu, cuda or cuda:N", "'" + device + "'");
  }
}

const std::vector<std::string>& RuntimeOptions::component_names() {
  static const std::vector<std::string> names = {"text", "dit", "vae", "vlm", "siglip", "lm", "vq"};
  return names;
}

RuntimeOptions RuntimeOptions::on(const std::string& component) const {
  RuntimeOptions r = *this;
  if (auto it = placement.find(component); it != placement.end()) r.device = it->second;
  return r;
}

bool RuntimeOptions::writes_output() const { return !parallel || parallel->rank() == 0; }

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return c10::kFloat;
  if (name == "bfloat16" || name == "bf16") return c10::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return c10::kHalf;
  throw Error("unknown dtype", "dtype option", "float32, bfloat16 or float16", "'" + name + "'");
}

c10::ScalarType RuntimeOptions::compute_dtype() const {
  if (dtype == "auto") return torch_device().is_cuda() ? c10::kBFloat16 : c10::kFloat;
  return parse_dtype(dtype);
}

void RuntimeOptions::validate() const {
  const c10::Device d = torch_device();
  const c10::ScalarType t = compute_dtype();
  if (d.is_cpu() && t == c10::kHalf)
    throw Error("float16 is not supported on the CPU", "RuntimeOptions::dtype", "float32 or bfloat16 on the CPU",
                "'" + dtype + "'");
  if (num_threads < 0 || num_threads > kMaxThreads)
    throw Error("invalid number of threads", "RuntimeOptions::num_threads",
                "0 (all hardware threads) to " + std::to_string(kMaxThreads), std::to_string(num_threads));
  for (const auto& [name, dev] : placement) {
    const auto& names = component_names();
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::string all;
      for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
      throw Error("unknown component in the placement", "RuntimeOptions::placement", all, "'" + name + "'");
    }
    RuntimeOptions probe;
    probe.device = dev;
    probe.dtype = dtype;
    const c10::Device d = probe.torch_device();
    if (d.type() != torch_device().type() || probe.compute_dtype() != compute_dtype())
      throw Error("a placed component must run on the same kind of device, in the same dtype", "RuntimeOptions::placement: " + name,
                  std::string(c10::DeviceTypeName(torch_device().type(), true)) + " like --device", dev);
  }
  if (!placement.empty() && offload != Offload::None)
    throw Error("placement and offload do not combine", "RuntimeOptions::placement",
                "offload none (placement is the way to fit without offload)", offload_name(offload));
  if (!placement.empty() && parallel && parallel->world_size() > 1)
    throw Error("placement and several ranks do not combine", "RuntimeOptions::placement",
                "one process (each rank holds every component on its own device)", std::to_string(parallel->world_size()) + " ranks");
  if (decode_graphs && offload != Offload::None)
    throw Error("decode graphs need the LM's weights on the device", "RuntimeOptions::decode_graphs",
                "offload none (a graph cannot replay the block streaming)", offload_name(offload));
  if (decode_graphs && parallel && parallel->world_size() > 1)
    throw Error("decode graphs run on one rank", "RuntimeOptions::decode_graphs", "one process",
                std::to_string(parallel->world_size()) + " ranks");
  if (!std::isfinite(max_vram_gb) || max_vram_gb < 0)
    throw Error("invalid memory budget", "RuntimeOptions::max_vram_gb", "a finite number >= 0 (0 = none)",
                std::to_string(max_vram_gb));
}

Offload parse_offload(const std::string& name) {
  if (name == "none") return Offload::None;
  if (name == "model") return Offload::Model;
  if (name == "sequential") return Offload::Sequential;
  throw Error("unknown offload mode", "offload option", "none, model or sequential", "'" + name + "'");
}

const char* offload_name(Offload o) {
  switch (o) {
    case Offload::None: return "none";
    case Offload::Model: return "model";
    case Offload::Sequential: return "sequential";
  }
  return "none";
}

void set_num_threads(int n) {
  if (n > RuntimeOptions::kMaxThreads)
    throw Error("invalid number of threads", "set_num_threads", "0 to " + std::to_string(RuntimeOptions::kMaxThreads),
                std::to_string(n));
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // OpenMP and MKL (PyPI's LibTorch): ATen sets both, whatever OMP_NUM_THREADS / MKL_NUM_THREADS say.
  at::set_num_threads(n);
  // An OpenBLAS LibTorch (Debian's, aarch64 builds) keeps its own pool that ATen does not size: left
  // at its default (every core, or OPENBLAS_NUM_THREADS), it runs on top of ATen's threads. Size it
  // the same, found at run time so no BLAS is linked here.
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
}

std::pair<int64_t, int64_t> cuda_memory_info(const c10::Device& device) {
  if (!device.is_cuda()) throw Error("not a CUDA device", "cuda_memory_info", "cuda:N", device.str());
#if OMNIFLUX_WITH_CUDA
  c10::cuda::CUDAGuard guard(device);
  size_t free = 0, total = 0;
  const cudaError_t e = cudaMemGetInfo(&free, &total);
  if (e != cudaSuccess) throw Error("cudaMemGetInfo failed", device.str(), "cudaSuccess", cudaGetErrorString(e));
  return {static_cast<int64_t>(free), static_cast<int64_t>(total)};
#else
  throw Error("this build has no CUDA", "cuda_memory_info", "a CUDA build", "CPU only");
#endif
}

CudaAllocatorStats cuda_allocator_stats(const c10::Device& device) {
  if (!device.is_cuda()) throw Error("not a CUDA device", "cuda_allocator_stats", "cuda:N", device.str());
#if OMNIFLUX_WITH_CUDA
  const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  return {s.allocated_bytes[all].current, s.reserved_bytes[all].current};
#else
  throw Error("this build has no CUDA", "cuda_allocator_stats", "a CUDA build", "CPU only");
#endif
}

}  // namespace omniflux
