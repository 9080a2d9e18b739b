#pragma once
// FLUX.1-dev text-to-image (diffusers FluxPipeline): CLIP-L pooled + T5-XXL sequence embeddings,
// flow-match Euler denoising of packed latents with the distilled guidance (and optional true
// CFG), VAE decode. Loads a FLUX.1-dev folder: transformer/, vae/, text_encoder/, text_encoder_2/,
// tokenizer/, tokenizer_2/, scheduler/, model_index.json.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "omniflux/io/image.h"
#include "omniflux/models/clip_text.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/flux_vae.h"
#include "omniflux/models/t5_encoder.h"
#include "omniflux/progress.h"
#include "omniflux/residency.h"
#include "omniflux/runtime.h"
#include "omniflux/sampling/flow_match.h"

namespace omniflux {

// Limits on the output size: each side a multiple of 16 in [16, 4096] (beyond 4096 pixels the
// position ids exceed what bf16 holds exactly).
constexpr int64_t kFluxMaxSide = 4096;
// Throws Error unless width and height are multiples of 16 within [16, kFluxMaxSide].
void flux_check_size(int64_t width, int64_t height);

enum class VaeTilingMode { Auto, Off, On };  // Auto: tiles only above the VAE's sample_size

// One request. The denoise stage alone reads only steps, guidance and true_cfg_scale.
struct FluxOptions {
  std::string prompt;
  std::optional<std::string> prompt_2;         // T5 prompt; default = prompt
  std::optional<std::string> negative_prompt;  // with true_cfg_scale > 1: true classifier-free guidance
  int64_t width = 1024, height = 1024;
  int64_t steps = 28;
  double guidance = 3.5;        // distilled guidance (guidance_embeds models)
  double true_cfg_scale = 1.0;  // > 1 and a negative prompt (denoise: an `uncond`): two DiT passes per step
  int64_t max_sequence_length = 512;
  uint64_t seed = 0;
  VaeTilingMode vae_tiling = VaeTilingMode::Auto;
};

struct FluxPromptEmbeds {
  at::Tensor pooled;  // [B, 768] CLIP pooler_output
  at::Tensor t5;      // [B, T, 4096] T5 last_hidden_state
};

class FluxPipeline {
 public:
  static FluxPipeline load(const std::string& folder, const RuntimeOptions& rt = {});
  // The FLUX.1-dev folder's text encoders, tokenizers, VAE and scheduler around a given
  // transformer (diffusers: FluxPipeline.from_pretrained(folder, transformer=...)); the folder's
  // own transformer/ is not read.
  static FluxPipeline load(const std::string& folder, FluxTransformer transformer, const RuntimeOptions& rt = {});
  // The same around a transformer built on demand by `transformer` (so model offload can drop and
  // rebuild it), with the residency group of the pipeline that embeds this one.
  // `release_transformer` runs when offload drops it (giving a shared store's pages back).
  static FluxPipeline load(const std::string& folder, std::function<FluxTransformer()> transformer,
                           const RuntimeOptions& rt, std::shared_ptr<ResidencyGroup> group,
                           std::function<void()> release_transformer = {});

  // Prompt to CLIP ids [1, 77] and T5 ids [1, max_sequence_length] (truncated and padded).
  at::Tensor clip_ids(const std::string& prompt) const;
  at::Tensor t5_ids(const std::string& prompt, int64_t max_sequence_length) const;
  // Text encoders on ids: CLIP pooled output and T5 last hidden state, in the compute dtype.
  FluxPromptEmbeds encode_ids(const at::Tensor& clip_ids, const at::Tensor& t5_ids) const;
  FluxPromptEmbeds encode_prompt(const std::string& prompt, const std::string& prompt_2,
                                 int64_t max_sequence_length) const;

  // Denoises the unpacked initial noise [B, C, h, w] to the final packed latents [B, hw/4, 4C];
  // nullopt when the callback cancelled. Intermediates are tapped as "flux.noise_pred" and
  // "flux.step_latents".
  std::optional<at::Tensor> denoise(const at::Tensor& noise, const FluxPromptEmbeds& cond,
                                    const FluxPromptEmbeds* uncond, const FluxOptions& opt,
                                    const ProgressCallback& progress = {}) const;
  // The flow-match Euler loop alone, for pipelines that build their own velocity (extra
  // conditioning, several guidance terms). velocity(latents [B, N, C], timestep [B] = sigma in the
  // transformer dtype, step index) returns [B, N, C]. Same schedule, taps and progress as denoise.
  using VelocityFn = std::function<at::Tensor(const at::Tensor& latents, const at::Tensor& timestep, int64_t step)>;
  std::optional<at::Tensor> denoise_with(const at::Tensor& noise, int64_t steps, const VelocityFn& velocity,
                                         const ProgressCallback& progress = {}) const;
  // Packed latents -> image [B, 3, height, width] float, nominally [-1, 1] (unclamped).
  at::Tensor decode(const at::Tensor& packed, int64_t height, int64_t width,
                    VaeTilingMode tiling = VaeTilingMode::Auto) const;
  // [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]: (x/2 + 0.5) clamped, *255, rounded half to even
  // (diffusers VaeImageProcessor.postprocess).
  static at::Tensor to_uint8(const at::Tensor& image);

  // The whole text-to-image call; nullopt when the callback cancelled.
  std::optional<Image> generate(const FluxOptions& opt, const ProgressCallback& progress = {}) const;

  // The components, built on the device if offload had released them (handles: cheap to copy).
  FluxTransformer transformer() const;
  FluxVae vae() const;
  ClipTextModel text_encoder() const;
  T5Encoder text_encoder_2() const;
  const FluxDiTConfig& transformer_config() const;  // without building anything
  const FlowMatchConfig& scheduler() const;
  const RuntimeOptions& runtime() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

}  // namespace omniflux
