#pragma once
// X-Omni's SigLIP-VQ image tokenizer (HF remote code modeling_siglip_tokenizer.py; docs/models/xomni.md §2):
//   image -> any-resolution preprocessing -> SigLIP2-g ViT -> [h*w, 1536] features
//         -> VQConvProjector.encode: 1x1 conv 1536->2048, l2-normalise, nearest codebook row -> codes
//   codes -> VQConvProjector.decode: raw codebook rows, 1x1 conv 2048->1536, 2 residual blocks
//         -> [h*w, 1536] features that condition the FLUX decoder.
// Codes are row-major over the h x w token grid.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux {

// ---- quantizer + decoder half (VQConvProjector) --------------------------------------------------

struct SiglipVQConfig {
  // Defaults: VQConvProjector / SiglipTokenizer arguments (z_channels=1536, codebook_size=16384,
  // codebook_dim=2048), two post_conv residual blocks with GroupNorm(32, eps 1e-5).
  int64_t z_channels = 1536;
  int64_t codebook_size = 16384;
  int64_t codebook_dim = 2048;
  int64_t conv_layers = 2;
  int64_t num_groups = 32;
  double group_norm_eps = 1e-5;

  // Reads the fields above from a JSON object (X-Omni's vision_config.encoder, or a config.json);
  // absent fields keep their defaults.
  static SiglipVQConfig from(const Config& c);
};

class SiglipVQ {
 public:
  // Weights by the exact VQConvProjector names (quant_conv.*, quantize.embedding.weight,
  // post_quant_conv.*, post_conv.{i}.{norm1,conv1,norm2,conv2}.*) under `w`. Strict: no other key
  // may be left in the store when loaded through load(path).
  SiglipVQ(const WeightView& w, const SiglipVQConfig& cfg);
  // `path`: a safetensors file or a folder with model.safetensors; config from `config_path`
  // (a JSON file or folder; empty: the folder of `path` if it has a config.json, else defaults).
  static SiglipVQ load(const std::string& path, const RuntimeOptions& rt = {},
                       const std::string& config_path = "");

  // features [B, h*w, z_channels] or [h*w, z_channels] (row-major grid) -> codes [B, h*w] or
  // [h*w], int64.
  at::Tensor encode(const at::Tensor& features, int64_t h, int64_t w) const;
  // codes [B, h*w] or [h*w] -> features [B, h*w, z_channels] or [h*w, z_channels].
  at::Tensor decode(const at::Tensor& codes, int64_t h, int64_t w) const;

  const SiglipVQConfig& config() const { return cfg_; }

 private:
  struct ResidualBlock {
    at::Tensor norm1_w, norm1_b, conv1_w, conv1_b, norm2_w, norm2_b, conv2_w, conv2_b;
  };
  SiglipVQConfig cfg_;
  at::Tensor quant_conv_w_, quant_conv_b_, codebook_, post_quant_conv_w_, post_quant_conv_b_;
  at::Tensor codebook_normed_;  // l2-normalised rows, for encode only
  std::vector<ResidualBlock> post_conv_;
};

// ---- SigLIP2-g ViT encoder -------------------------------------------------------------------------

// The ViT file's own layout is not published (docs/models/xomni.md §2.2, §9.4). Sizes default to SigLIP2-g
// (sibling code's siglip2_giant_patch16_384) and are checked against the weights; the layout
// (fused or separate q/k/v, a final norm or not, a key prefix) is read from the weight names.
struct SiglipViTConfig {
  int64_t hidden_size = 1536;
  int64_t intermediate_size = 6144;
  int64_t num_hidden_layers = 40;
  int64_t num_attention_heads = 16;
  int64_t patch_size = 16;
  double layer_norm_eps = 1e-6;       // timm partial(nn.LayerNorm, eps=1e-6)
  std::string hidden_act = "gelu";    // sibling code forces exact-erf nn.GELU [INFER]
  bool pos_embed_antialias = false;   // bilinear, align_corners=False, no antialias [INFER]

  // Reads hidden_size/width, intermediate_size/mlp_dim, num_hidden_layers/depth,
  // num_attention_heads/heads, patch_size, layer_norm_eps, hidden_act, pos_embed_antialias.
  static SiglipViTConfig from(const Config& c);
};

class SiglipViT {
 public:
  struct Layout {
    std::string prefix;    // "" or e.g. "vision_tower." (ends with '.')
    bool fused_qkv = true;  // blocks.{i}.attn.qkv.*  vs  blocks.{i}.attn.{q,k,v}_proj.*
    bool final_norm = false;
    int64_t pos_grid = 0;   // the stored position table is pos_grid x pos_grid
  };
  // Detects the layout from the names under `store`; throws Error listing the keys when they match
  // no supported layout.
  static Layout detect_layout(const WeightStore& store);

  SiglipViT(WeightStore& store, const SiglipViTConfig& cfg);
  static SiglipViT load(const std::string& path, const RuntimeOptions& rt = {},
                        const std::string& config_path = "");

  // pixels [B, 3, H, W] in [-1, 1], H and W multiples of patch_size -> features [B, h*w, hidden]
  // (h = H / patch, w = W / patch, row-major).
  at::Tensor forward(const at::Tensor& pixels) const;

  const SiglipViTConfig& config() const { return cfg_; }
  const Layout& layout() const { return layout_; }

 private:
  struct Block;
  SiglipViTConfig cfg_;
  Layout layout_;
  at::Tensor patch_w_, patch_b_, pos_embed_, norm_w_, norm_b_;
  std::vector<std::shared_ptr<const Block>> blocks_;
};

// ---- any-resolution preprocessing (create_anyres_preprocess) ----------------------------------------

struct AnyresTransform {
  // create_anyres_preprocess defaults; X-Omni's vision_config.transform may override them.
  int64_t short_size = 384;
  int64_t long_size = 1152;
  int64_t patch_size = 16;
  int64_t min_short_size = 128;
  double max_aspect_ratio = 3.0;
  bool filtering = true;

  static AnyresTransform from(const Config& c);
};

// Target (width, height) for a width x height image: short side up to short_size, long side down
// to long_size, each rounded to a multiple of patch_size with Python's half-to-even round().
// Throws Error naming the rule (min_short_size, max_aspect_ratio) an image breaks.
std::pair<int64_t, int64_t> anyres_target_size(int64_t width, int64_t height, const AnyresTransform& t = {});

struct Image;  // omniflux/io/image.h

// create_anyres_preprocess: the image resized (PIL bicubic) to anyres_target_size, ToTensor then
// Normalize(0.5, 0.5) in float32. Returns [1, 3, H, W] in [-1, 1] on the CPU.
at::Tensor anyres_preprocess(const Image& image, const AnyresTransform& t = {});

// ---- the whole tokenizer (SiglipTokenizer) ----------------------------------------------------------

class SiglipVQTokenizer {
 public:
  struct Tokens {
    at::Tensor codes;  // [h*w] int64, row-major
    int64_t h = 0, w = 0;
  };

  SiglipVQTokenizer(SiglipViT vit, SiglipVQ vq, AnyresTransform transform = {});

  // Image -> codes: preprocessing, ViT, quantizer. Throws Error on images the transform rejects.
  Tokens encode(const Image& image) const;
  // Codes -> [h*w, z_channels] features for the FLUX decoder.
  at::Tensor decode(const at::Tensor& codes, int64_t h, int64_t w) const { return vq_.decode(codes, h, w); }

  const SiglipViT& vit() const { return vit_; }
  const SiglipVQ& vq() const { return vq_; }
  const AnyresTransform& transform() const { return transform_; }

 private:
  SiglipViT vit_;
  SiglipVQ vq_;
  AnyresTransform transform_;
};

}  // namespace omniflux
