#pragma once
// FLUX VAE (diffusers AutoencoderKL with 16 latent channels): convolutional encoder and decoder
// with a single-head attention mid block. Weights by their diffusers names (encoder.*, decoder.*,
// and quant_conv / post_quant_conv when the config uses them; FLUX does not).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux {

// vae/config.json; defaults from the AutoencoderKL constructor.
struct FluxVaeConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> block_out_channels = {64};
  int64_t layers_per_block = 1;
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  double shift_factor = 0.0;  // null/absent -> 0
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;
  int64_t sample_size = 32;  // pixels; sets the tile size of tiled decoding

  // Pixels per latent pixel: 2^(number of down blocks - 1).
  int64_t downscale() const { return int64_t(1) << (block_out_channels.size() - 1); }
  static FluxVaeConfig from_config(const Config& c);
};

struct VaeLatentDist {
  at::Tensor mean;    // [B, latent_channels, H/8, W/8]
  at::Tensor logvar;  // clamped to [-30, 20]
};

// Tiled decoding: latent tiles of `tile` pixels (0 = sample_size / downscale) overlapping by
// `overlap` of a tile; neighbouring decoded tiles are blended linearly across the overlap.
struct VaeTiling {
  int64_t tile = 0;
  double overlap = 0.25;
};

class FluxVae {
 public:
  FluxVae(const FluxVaeConfig& cfg, const WeightView& w);
  // A diffusers vae/ folder (config.json + safetensors); strict loading.
  static FluxVae load(const std::string& folder, const RuntimeOptions& rt = {});

  // Decoder on unscaled latents z [B, latent_channels, h, w] -> image [B, out, 8h, 8w] in ~[-1, 1].
  at::Tensor decode(const at::Tensor& z) const;
  // The same, tile by tile (bounded memory for large images).
  at::Tensor decode_tiled(const at::Tensor& z, const VaeTiling& tiling = {}) const;
  // Encoder on images [B, in, H, W] in [-1, 1] (H, W multiples of 8).
  VaeLatentDist encode(const at::Tensor& image) const;

  // Pipeline conventions: decode(latents / scaling_factor + shift_factor), and
  // (encode(image).mean - shift_factor) * scaling_factor.
  at::Tensor unscale_latents(const at::Tensor& latents) const;
  at::Tensor scale_latents(const at::Tensor& z) const;

  const FluxVaeConfig& config() const;
  c10::ScalarType dtype() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// The tiling itself, for any decoder: splits z [B, C, h, w] into overlapping tiles of `tile`
// latents, decodes each with `decode` (scale times larger in pixels), blends the overlaps linearly
// (diffusers AutoencoderKL.tiled_decode) and crops to [B, C', scale*h, scale*w].
at::Tensor tiled_decode(const at::Tensor& z, int64_t tile, double overlap, int64_t scale,
                        const std::function<at::Tensor(const at::Tensor&)>& decode);

}  // namespace omniflux
