#pragma once
// Where and in what precision models run. Defaults: fp32 on CPU, bf16 on CUDA.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace omniflux {

// Where weights live between uses (docs/architecture.md §Offload):
//   None       everything stays on the compute device;
//   Model      each component is on the compute device only while it runs (diffusers'
//              enable_model_cpu_offload), one after another;
//   Sequential the DiT and LM blocks stream in one at a time (CUDA: from pinned host memory on a
//              side stream, the next block copied while this one computes; CPU: materialised from
//              the mapped file only while the block runs).
enum class Offload { None, Model, Sequential };

class Parallel;  // omniflux/distributed.h
Offload parse_offload(const std::string& name);  // "none", "model", "sequential"; Error otherwise
const char* offload_name(Offload o);

struct RuntimeOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:1"
  std::string dtype = "auto";  // "auto", "float32", "bfloat16", "float16"
  int num_threads = 0;         // CPU intra-op threads; 0 = all hardware threads
  Offload offload = Offload::None;
  double max_vram_gb = 0;      // device-memory budget in GiB (as cards are sized) that --dry-run plans are checked against; 0 = none
  bool check_finite_weights = true;   // scan weights for NaN/Inf at load and name the tensor
  bool allow_outside_paths = false;   // let config files point outside their model folder
  // Placement without communication (docs/distributed.md): components on other devices than
  // `device`, by name, e.g. {"dit": "cuda:1"}. Names: "text" (CLIP and T5), "dit", "vae", and per
  // pipeline "vlm" (UniWorld's Qwen2.5-VL with its connectors and task head), "siglip" (UniWorld's
  // SigLIP), "lm" (X-Omni's LM), "vq" (X-Omni's SigLIP-VQ tokenizer). Each component runs where it
  // is placed and the pipeline moves what passes between them. Only with offload none and one rank.
  std::map<std::string, std::string> placement;
  // These options with `device` set to where `component` is placed (unchanged when it is not).
  RuntimeOptions on(const std::string& component) const;
  static const std::vector<std::string>& component_names();
  // The ranks this process computes with (omniflux/distributed.h); null: this process alone.
  // Copies share it.
  std::shared_ptr<const Parallel> parallel;
  // LM decoding through decode graphs (docs/gpu.md §Decode graphs): after the prefill the KV cache
  // keeps fixed shapes (key views rounded up to kDecodeGraphBucket), and each bucket's decode step
  // with its sampling is captured once as a CUDA graph and replayed per token. On the CPU the same
  // fixed-shape steps run, replayed with the cache's host side frozen at capture: a check that the
  // step is capturable, not a speed-up. Needs offload none and one rank. Off by default: on the
  // first H100 run it was 12% faster than eager decoding, held back by its attention (docs/gpu.md).
  bool decode_graphs = false;

  // Checks every field at once (every WeightStore does on construction): a known device and
  // dtype, no float16 on the CPU (LibTorch lacks CPU half kernels for several ops the models use),
  // num_threads in [0, kMaxThreads], a finite max_vram_gb >= 0. Throws Error naming the field.
  void validate() const;
  static constexpr int kMaxThreads = 1024;

  c10::Device torch_device() const;
  // Whether this process writes results: rank 0, or the only process.
  bool writes_output() const;
  // The floating-point dtype weights and activations use: "auto" is fp32 on CPU, bf16 on CUDA.
  c10::ScalarType compute_dtype() const;
};

// Keys per fixed-shape KV bucket under decode_graphs: one graph per 256 tokens generated, and at
// most 255 masked keys per step.
inline constexpr int64_t kDecodeGraphBucket = 256;

// Parses "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16"; throws Error otherwise.
c10::ScalarType parse_dtype(const std::string& name);

// Sets the CPU threads of everything that computes: LibTorch's intra-op pool (OpenMP), MKL, and
// OpenBLAS's own pool when the LibTorch build uses OpenBLAS (n <= 0: all hardware threads). After
// it, OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS in the environment change nothing.
void set_num_threads(int n);

// Free and total bytes of a CUDA device (cudaMemGetInfo). Throws Error for a device that is not
// CUDA or in a build without CUDA.
std::pair<int64_t, int64_t> cuda_memory_info(const c10::Device& device);

// What LibTorch's caching allocator holds on a CUDA device: bytes in live tensors, and bytes
// reserved from the driver (allocated plus cached). Throws as cuda_memory_info.
struct CudaAllocatorStats {
  int64_t allocated = 0, reserved = 0;
};
CudaAllocatorStats cuda_allocator_stats(const c10::Device& device);

}  // namespace omniflux
