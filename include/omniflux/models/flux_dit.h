#pragma once
// FLUX.1 transformer (diffusers FluxTransformer2DModel): 19 double-stream blocks over separate text
// and image streams, 38 single-stream blocks over the joint sequence, with the 3-axis interleaved
// rotary embedding. Weights by their diffusers names (x_embedder, transformer_blocks.N.*, ...).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux {

// transformer/config.json; defaults from the FluxTransformer2DModel constructor.
struct FluxDiTConfig {
  int64_t patch_size = 1;
  int64_t in_channels = 64;
  int64_t out_channels = 64;  // absent -> in_channels
  int64_t num_layers = 19;
  int64_t num_single_layers = 38;
  int64_t attention_head_dim = 128;
  int64_t num_attention_heads = 24;
  int64_t joint_attention_dim = 4096;
  int64_t pooled_projection_dim = 768;
  bool guidance_embeds = false;  // FLUX.1-dev: true
  std::vector<int64_t> axes_dims_rope = {16, 56, 56};
  double rope_theta = 10000.0;  // hard-coded FluxPosEmbed(theta=10000)
  int64_t mlp_ratio = 4;        // hard-coded

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
  static FluxDiTConfig from_config(const Config& c);
};

struct FluxDiTInputs {
  at::Tensor hidden_states;          // [B, N, in_channels] packed latents
  at::Tensor encoder_hidden_states;  // [B, T, joint_attention_dim] (T5)
  at::Tensor pooled_projections;     // [B, pooled_projection_dim] (CLIP pooled)
  at::Tensor timestep;               // [B] sigma = t / 1000; the model multiplies by 1000
  at::Tensor guidance;               // [B] distilled guidance scale (guidance_embeds models only)
  at::Tensor img_ids;                // [N, 3] (0, row, col)
  at::Tensor txt_ids;                // [T, 3] zeros
  // Optional extra image tokens (a reference image, ids (1, row, col)) appended after the image
  // tokens; they condition the prediction and their own outputs are sliced off.
  at::Tensor ref_hidden_states;      // [B, Nr, in_channels]
  at::Tensor ref_img_ids;            // [Nr, 3]
  // Optional additive conditioning of the image stream: [B, N, inner_dim] added to the
  // patch-embedded image tokens x_embedder(hidden_states) before the first block (X-Omni's SigLIP
  // feature injection). Undefined = none.
  at::Tensor image_embeds_add;
};

class FluxTransformer {
 public:
  // Reads every weight of the model under `w` (the caller calls finish() on the store).
  FluxTransformer(const FluxDiTConfig& cfg, const WeightView& w);
  // A diffusers transformer/ folder (config.json + safetensors, sharded or not); strict loading.
  static FluxTransformer load(const std::string& folder, const RuntimeOptions& rt = {});

  // Velocity prediction [B, N, out_channels] for the N image tokens.
  at::Tensor forward(const FluxDiTInputs& in) const;

  const FluxDiTConfig& config() const;
  c10::ScalarType dtype() const;  // of the weights (activations run in it)

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// With sequence parallelism on (rt.parallel), the heads must divide over the sequence-parallel
// ranks; throws Error naming `where` otherwise. The constructor checks it before reading weights;
// pipelines call it as soon as they know the config.
void check_flux_dit_parallel(const FluxDiTConfig& cfg, const RuntimeOptions& rt, const std::string& where);

// FLOPs of one forward (matmuls and attention, 2 per multiply-add) for N image and T text tokens.
double flux_dit_flops(const FluxDiTConfig& cfg, int64_t n_img, int64_t n_txt, int64_t batch = 1);

}  // namespace omniflux
