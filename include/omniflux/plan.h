#pragma once
// Dry runs: the real models at real request sizes with every weight on the `meta` device, so
// shapes, dtypes and device placement are checked at full size without allocating anything, and
// the memory figures an offload plan needs come out per component:
//
//   omniflux::RuntimeOptions rt;  // device "meta", dtype "bfloat16" (the defaults of DryRunOptions)
//   for (const auto& c : omniflux::plan::plan_flux("FLUX.1-dev/", {})) std::cout << to_json(c) << "\n";
//
// The model folders may be real downloads (nothing is read beyond the safetensors headers and the
// JSON files) or header-only stand-ins (omniflux-plan writes them from models/configs/).
#include <cstdint>
#include <string>
#include <vector>

#include "omniflux/distributed.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/runtime.h"

namespace omniflux::plan {

// --- Weights ------------------------------------------------------------------------------------

// Bytes of a checkpoint's tensors in two storage formats:
//   bf16: 2 bytes per parameter;
//   fp8:  what omniflux-quantize writes (io/quantize.h, is_block_linear_weight): a block's 2-D
//         Linear weight takes 1 byte per element plus a float32 scale per output row (the
//         per-channel layout of io/quant_format.h); everything else stays bf16. int8 takes the same bytes.
struct BlockFigures {
  std::string prefix;     // e.g. "transformer_blocks", "model.layers"
  int64_t count = 0;      // blocks under the prefix
  int64_t params = 0;     // of the largest block
  int64_t bytes_bf16 = 0;
  int64_t bytes_fp8 = 0;
};
struct WeightFigures {
  int64_t tensors = 0, params = 0, bytes_bf16 = 0, bytes_fp8 = 0;
  std::vector<BlockFigures> blocks;  // repeated blocks (a numbered key level seen at least twice)
};
// Figures of the tensors whose names start with one of `prefixes` (all when empty).
WeightFigures weight_figures(const Checkpoint& ckpt, const std::vector<std::string>& prefixes = {});
bool fp8_eligible(const std::string& name, const std::vector<int64_t>& shape);

// --- Activations --------------------------------------------------------------------------------

// The largest tensor an op called by our code returned: bytes of its storage, the op, its shape.
// Ops nested inside another op are not counted (SDPA's math kernel, which the meta device runs,
// would otherwise show a [B, H, Lq, Lk] score matrix that the fused kernels never allocate).
struct LargestTensor {
  int64_t bytes = 0;
  std::string op;
  std::vector<int64_t> shape;
  std::string dtype;
  std::string run;  // the forward pass it came from
};

// While alive, records the largest op output on this thread (RecordFunction observer).
class ActivationProbe {
 public:
  explicit ActivationProbe(std::string run);
  ~ActivationProbe();
  ActivationProbe(const ActivationProbe&) = delete;
  ActivationProbe& operator=(const ActivationProbe&) = delete;
  LargestTensor largest() const;
  int64_t ops() const;  // ops observed at the top level

 private:
  uint64_t handle_ = 0;
};

// The aten ops LibTorch's C++ build has no meta kernel for and omniflux supplies (shapes and dtypes
// only), registered on the first ActivationProbe or dry run.
const std::vector<std::string>& supplied_meta_kernels();

// --- Components and requests --------------------------------------------------------------------

struct ComponentPlan {
  std::string name;    // "flux_dit", "qwen2_5_vl_lm", ...
  std::string source;  // folder (and key prefix) of its weights
  WeightFigures weights;
  LargestTensor largest_activation;
  int64_t kv_cache_bytes = 0;      // the static KV cache at the request's length (LMs)
  // Ranks the component's repeated blocks split over (a language model under tensor parallelism):
  // the offload estimates count blocks / tensor_parallel of its block weights per rank.
  int64_t tensor_parallel = 1;
  std::vector<std::string> runs;   // forward passes that ran, with their shapes
  // With a simulated Parallel in the dry run's runtime (Parallel::simulate): what this rank sent
  // in each run, parallel to `runs`.
  std::vector<Traffic> traffic;
  std::string error;               // first failure (e.g. an op without a meta kernel); empty: ok
  bool ok() const { return error.empty(); }
};
std::string to_json(const ComponentPlan& c);
// A fixed-width table, one line per component.
std::string to_table(const std::vector<ComponentPlan>& plans);
// The RuntimeOptions::placement name of a dry-run component ("flux_dit" -> "dit", "t5_encoder" ->
// "text", "qwen2_5_vl_lm" -> "vlm", ...).
std::string placement_of(const std::string& component);
// Components placed on several devices (RuntimeOptions::placement, offload none): each device's
// components and peak memory per weight format (its weights, KV caches and the largest working
// set among them, plus the CUDA context), marked against max_vram_gb when it is set.
std::string placement_table(const std::vector<ComponentPlan>& plans, const RuntimeOptions& rt,
                            const std::vector<std::string>& formats, double max_vram_gb);
// With simulated ranks (Parallel::simulate in the dry run's runtime): what this rank sends in each
// run that communicates, and that time at two nominal link speeds (NVLink 4 at 450 GB/s per
// direction, PCIe 4.0 x16 at 25 GB/s); no GPU measured these.
std::string traffic_table(const std::vector<ComponentPlan>& plans, const Parallel& parallel);

struct DryRunOptions {
  RuntimeOptions rt = meta_bf16();
  static RuntimeOptions meta_bf16() {
    RuntimeOptions r;
    r.device = "meta";
    r.dtype = "bfloat16";
    return r;
  }
};

// FLUX.1-dev text to image: CLIP-L (77 tokens), T5-XXL, one DiT forward, VAE decode.
struct FluxRequest {
  int64_t width = 1024, height = 1024;
  int64_t t5_tokens = 512;
  int64_t batch = 1;
};
std::vector<ComponentPlan> plan_flux(const std::string& flux_dir, const FluxRequest& req,
                                     const DryRunOptions& opt = {});

// UniWorld-V1 editing: the chat prompt with `ref_images` reference images through Qwen2.5-VL
// (vision tower, then the LM prefill), SigLIP on each reference, the connectors, CLIP, T5, one DiT
// forward on the assembled text stream, VAE decode.
struct UniWorldRequest {
  int64_t width = 1024, height = 1024;
  int64_t ref_images = 2;
  int64_t ref_width = 1024, ref_height = 1024;
  std::string prompt = "Adapt Image1's content to fit the aesthetic of Image2.";
  bool t5 = true;
  int64_t t5_tokens = 256;
};
std::vector<ComponentPlan> plan_uniworld(const std::string& uniworld_dir, const std::string& flux_dir,
                                         const std::string& siglip_dir, const UniWorldRequest& req,
                                         const DryRunOptions& opt = {});

// X-Omni text to image: the LM prefill of the prompt (and the CFG row), then the last of the
// (width/16)*(height/16) decode steps against the full KV cache; the SigLIP-VQ decoder half on
// the codes (and the ViT encoder on an image of the same size, for chat); the FLUX decoder's DiT
// with the feature injection, T5, CLIP, VAE.
struct XOmniRequest {
  int64_t width = 1152, height = 1152;
  bool cfg = true;
  std::string prompt = "A watercolor painting of a lighthouse on a cliff at dawn, soft pastel colors.";
  int64_t decoder_batch = 3;  // DiT rows per step: prompt, "" with features, "" without (two scales)
  int64_t t5_tokens = 512;
};
std::vector<ComponentPlan> plan_xomni(const std::string& xomni_dir, const std::string& flux_dir,
                                      const XOmniRequest& req, const DryRunOptions& opt = {});

// --- Offload --------------------------------------------------------------------------------------

// Peak device memory of a request under each offload mode, from its components' dry-run figures.
// Weights count in the storage format ("fp32", "bf16", "fp8" or "int8"; int8 takes fp8's bytes);
// activations at the compute dtype (bf16 figures, doubled for fp32). A component's working set is
// its weights + 2 x its largest activation (an op's input and output alive together) + its KV cache.
//   none:       every component's weights + the largest working set beyond weights;
//   model:      the largest working set (one component on the device at a time);
//   sequential: as model, but the DiT and LM keep only their non-block weights and two blocks
//               (the running one and the one being copied in).
// Plus `reserve_bytes` for the CUDA context, cuBLAS workspaces and allocator slack.
struct OffloadEstimate {
  std::string weights;  // the storage format used
  struct Component {
    std::string name;
    int64_t weight_bytes = 0, streamed_bytes = 0, working_bytes = 0;  // streamed: under sequential
    bool streams = false;
  };
  std::vector<Component> components;
  int64_t reserve_bytes = 0;
  int64_t peak_none = 0, peak_model = 0, peak_sequential = 0;
  std::string peak_model_at, peak_sequential_at;  // the component that sets the peak
  int64_t peak(Offload mode) const;
};
constexpr int64_t kDefaultReserveBytes = int64_t(1) << 30;
OffloadEstimate estimate_offload(const std::vector<ComponentPlan>& plans, const std::string& weights,
                                 int64_t reserve_bytes = kDefaultReserveBytes);
// The table --dry-run prints: bytes per component, then the peak of each mode for each storage
// format, marked against `max_vram_gb` (0: no budget given).
std::string offload_table(const std::vector<ComponentPlan>& plans, const std::vector<std::string>& formats,
                          double max_vram_gb);

}  // namespace omniflux::plan
