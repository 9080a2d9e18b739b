#pragma once
// FLUX latent handling as pure functions (diffusers FluxPipeline): 2x2 packing of VAE latents into
// tokens, position ids of image and text tokens, and the seeded initial noise.
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace omniflux {

// Latent height or width for an image side in pixels: 2 * (pixels / 16) (the VAE downscales by 8,
// the packing by 2 more).
int64_t flux_latent_size(int64_t pixels);

// [B, C, H, W] -> [B, (H/2)(W/2), 4C]; token index row-major over the 2x2 patches, channel index
// c*4 + dy*2 + dx (diffusers _pack_latents). H and W must be even.
at::Tensor pack_latents(const at::Tensor& latents);
// Inverse of pack_latents: [B, (h/2)(w/2), 4C] -> [B, C, h, w] for latent size h x w.
at::Tensor unpack_latents(const at::Tensor& packed, int64_t h, int64_t w);

// Ids of the packed image tokens for a latent of h x w: [(h/2)(w/2), 3] float32 rows
// (index, row, col); index 0 for the image being generated, 1 for a reference image.
at::Tensor latent_image_ids(int64_t h, int64_t w, int64_t index = 0);
// Ids of T text tokens: zeros [T, 3] float32.
at::Tensor text_ids(int64_t t);

// Initial noise as diffusers draws it with generator=torch.Generator("cpu").manual_seed(seed):
// randn([batch, channels, h, w]) float32 from LibTorch's CPU mt19937 generator, in that shape and
// order, then cast to `dtype` and moved to `device`. The same seed gives the same noise on every
// device (drawing on the CPU, as that pipeline call does).
at::Tensor flux_initial_noise(uint64_t seed, int64_t batch, int64_t channels, int64_t h, int64_t w,
                              c10::ScalarType dtype = c10::ScalarType::Float, c10::Device device = c10::kCPU);

}  // namespace omniflux
