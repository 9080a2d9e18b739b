#pragma once
// SigLIP vision towers (docs/models/components-qwen-siglip.md §c):
//  - Siglip2VisionModel: NaFlex SigLIP2 (HF transformers modeling_siglip2.py). Linear patch
//    embedding on (py, px, c) patch rows, the position table resized per image to its patch grid
//    (bilinear, antialias, align_corners=False, fp32), key-padding mask for padded rows.
//  - SiglipVisionModel: classic SigLIP / SigLIP2 FixRes (modeling_siglip.py), e.g.
//    google/siglip2-so400m-patch16-512 as UniWorld loads it. Conv2d patch embedding, fixed grid.
// Both: pre-LN encoder layers, post_layernorm (last_hidden_state), and the optional
// multihead-attention pooling head (pooler_output), loaded only when asked for.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux {

struct SiglipVisionConfig {
  // Defaults: transformers SiglipVisionConfig / Siglip2VisionConfig.
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t num_channels = 3;
  int64_t patch_size = 16;
  int64_t image_size = 224;   // classic: fixed input size
  int64_t num_patches = 256;  // NaFlex: the position table holds sqrt(n) x sqrt(n) positions
  std::string hidden_act = "gelu_pytorch_tanh";
  double layer_norm_eps = 1e-6;
  bool use_head = true;       // vision_use_head, absent = true

  // A vision config object, or a full Siglip(2)Model config (its "vision_config" is used).
  static SiglipVisionConfig from(const Config& c);
  static SiglipVisionConfig load(const std::string& file_or_folder) { return from(Config::load(file_or_folder)); }
};

struct SiglipVisionOutput {
  at::Tensor last_hidden_state;  // [B, L, hidden], after post_layernorm
  at::Tensor pooler_output;      // [B, hidden]; undefined when the head is not loaded
};

namespace detail {
struct SiglipTower;
}

class Siglip2VisionModel {
 public:
  // `w` views the vision_model.* prefix. `with_head` loads the pooling head (keys head.*).
  Siglip2VisionModel(const WeightView& w, const SiglipVisionConfig& cfg, bool with_head = false);
  // A folder with config.json and model.safetensors of a Siglip2Model or Siglip2VisionModel
  // (text_model.*, logit_* and, without `with_head`, the head are left unused on purpose).
  static Siglip2VisionModel load(const std::string& folder, const RuntimeOptions& rt = {}, bool with_head = false);

  // pixel_values [B, N, P*P*C] (processor rows, zero padded), pixel_attention_mask [B, N] (1 = real
  // patch), spatial_shapes [B, 2] (patches_h, patches_w), as Siglip2ImageProcessor makes them.
  SiglipVisionOutput forward(const at::Tensor& pixel_values, const at::Tensor& pixel_attention_mask,
                             const at::Tensor& spatial_shapes) const;

  const SiglipVisionConfig& config() const;
  bool has_head() const;

 private:
  std::shared_ptr<const detail::SiglipTower> tower_;
  at::Tensor patch_w_, patch_b_, pos_table_;
};

class SiglipVisionModel {
 public:
  SiglipVisionModel(const WeightView& w, const SiglipVisionConfig& cfg, bool with_head = false);
  static SiglipVisionModel load(const std::string& folder, const RuntimeOptions& rt = {}, bool with_head = false);

  // pixel_values [B, C, image_size, image_size] -> last_hidden_state [B, (image_size/P)^2, hidden].
  SiglipVisionOutput forward(const at::Tensor& pixel_values) const;

  const SiglipVisionConfig& config() const;
  bool has_head() const;

 private:
  std::shared_ptr<const detail::SiglipTower> tower_;
  at::Tensor patch_w_, patch_b_, pos_table_;
};

// ---- image processors ---------------------------------------------------------------------------
// HF slow (PIL) processors: PIL-exact resize of the uint8 image, rescale in float64 then cast to
// float32 (image_transforms.rescale), normalise in float32.

struct Image;  // omniflux/io/image.h

struct SiglipImageProcessorConfig {
  bool do_resize = true, do_rescale = true, do_normalize = true;
  int64_t resample = 3;  // PIL code: 2 BILINEAR, 3 BICUBIC (SiglipImageProcessor default; Siglip2: 2)
  double rescale_factor = 1.0 / 255.0;
  std::vector<double> image_mean = {0.5, 0.5, 0.5}, image_std = {0.5, 0.5, 0.5};
  int64_t height = 224, width = 224;                  // SiglipImageProcessor size
  int64_t patch_size = 16, max_num_patches = 256;     // Siglip2ImageProcessor (NaFlex)

  // A preprocessor_config.json object; defaults follow its image_processor_type.
  static SiglipImageProcessorConfig from(const Config& c);
  // A preprocessor_config.json file, or a folder holding one.
  static SiglipImageProcessorConfig load(const std::string& file_or_folder);
};

struct Siglip2Inputs {
  at::Tensor pixel_values;          // [B, max_num_patches, P*P*3] float32, zero padded
  at::Tensor pixel_attention_mask;  // [B, max_num_patches] int32, 1 = real patch
  at::Tensor spatial_shapes;        // [B, 2] int64 (patches_h, patches_w)
};

// Siglip2ImageProcessor: resize to naflex_target_size, rescale, normalise, patchify channels-last
// ((py, px, c) inside a row, rows in raster order), pad to max_num_patches.
Siglip2Inputs siglip2_preprocess(const std::vector<Image>& images, const SiglipImageProcessorConfig& cfg);
// SiglipImageProcessor: resize to exactly height x width (aspect not kept), rescale, normalise,
// CHW. Returns [B, 3, height, width] float32.
at::Tensor siglip_preprocess(const std::vector<Image>& images, const SiglipImageProcessorConfig& cfg);

// Siglip2ImageProcessor.get_image_size_for_max_num_patches: the (height, width) in pixels, each a
// multiple of patch_size, of the largest scaling with at most max_num_patches patches (binary
// search over the scale in double, as the reference). Throws Error on impossible arguments.
std::pair<int64_t, int64_t> naflex_target_size(int64_t height, int64_t width, int64_t patch_size,
                                               int64_t max_num_patches);

}  // namespace omniflux
