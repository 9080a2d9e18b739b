#include "sampling/latents.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "omniflux/error.h"

namespace omniflux {

int64_t flux_latent_size(int64_t pixels) {
  if (pixels < 16) throw Error("image side too small", "flux_latent_size", ">= 16 pixels", std::to_string(pixels));
  return 2 * (pixels / 16);
}

at::Tensor pack_latents(const at::Tensor& x) {
  if (x.dim() != 4 || x.size(2) % 2 != 0 || x.size(3) % 2 != 0)
    throw Error("latents must be [B, C, H, W] with even H and W", "pack_latents", "[B, C, 2h, 2w]",
                shape_str(x.sizes().vec()));
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2) / 2, w = x.size(3) / 2;
  // [B, C, h, 2, w, 2] -> [B, h, w, C, 2, 2] -> [B, h*w, C*4]
  return x.reshape({b, c, h, 2, w, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({b, h * w, c * 4});
}

at::Tensor unpack_latents(const at::Tensor& x, int64_t h, int64_t w) {
  if (x.dim() != 3 || h % 2 != 0 || w % 2 != 0 || h <= 0 || w <= 0 || x.size(1) != (h / 2) * (w / 2) ||
      x.size(2) % 4 != 0)
    throw Error("packed latents do not match the latent size", "unpack_latents",
                "[B, " + std::to_string((h / 2) * (w / 2)) + ", 4C] for " + std::to_string(h) + "x" + std::to_string(w),
                shape_str(x.sizes().vec()));
  const int64_t b = x.size(0), c = x.size(2) / 4;
  // [B, h/2, w/2, C, 2, 2] -> [B, C, h/2, 2, w/2, 2] -> [B, C, h, w]
  return x.reshape({b, h / 2, w / 2, c, 2, 2}).permute({0, 3, 1, 4, 2, 5}).reshape({b, c, h, w});
}

at::Tensor latent_image_ids(int64_t h, int64_t w, int64_t index) {
  if (h % 2 != 0 || w % 2 != 0 || h <= 0 || w <= 0)
    throw Error("latent size must be even and positive", "latent_image_ids", "even", std::to_string(h) + "x" + std::to_string(w));
  const int64_t hh = h / 2, ww = w / 2;
  at::Tensor ids = at::zeros({hh, ww, 3}, at::kFloat);
  ids.select(2, 0).fill_(static_cast<double>(index));
  ids.select(2, 1).add_(at::arange(hh, at::kFloat).unsqueeze(1));
  ids.select(2, 2).add_(at::arange(ww, at::kFloat).unsqueeze(0));
  return ids.reshape({hh * ww, 3});
}

at::Tensor text_ids(int64_t t) {
  if (t < 0) throw Error("negative text length", "text_ids");
  return at::zeros({t, 3}, at::kFloat);
}

at::Tensor flux_initial_noise(uint64_t seed, int64_t batch, int64_t channels, int64_t h, int64_t w,
                              c10::ScalarType dtype, c10::Device device) {
  if (batch < 1 || channels < 1 || h < 1 || w < 1)
    throw Error("invalid noise shape", "flux_initial_noise", "positive sizes",
                shape_str({batch, channels, h, w}));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor noise = at::randn({batch, channels, h, w}, gen, at::TensorOptions().dtype(at::kFloat));
  return noise.to(device, dtype);
}

}  // namespace omniflux
