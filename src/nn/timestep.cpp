#include "nn/timestep.h"

#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux::nn {

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, bool flip_sin_to_cos,
                              double downscale_freq_shift, double scale, double max_period) {
  if (t.dim() != 1) throw Error("timesteps must be 1-D", "nn::timestep_embedding", "[B]", shape_str(t.sizes().vec()));
  if (dim < 2) throw Error("embedding dim too small", "nn::timestep_embedding", ">= 2", std::to_string(dim));
  const int64_t half = dim / 2;
  // Same float32 op sequence as diffusers, so the arguments (up to ~3500 rad) round identically.
  at::Tensor exponent = at::arange(0, half, at::TensorOptions().dtype(at::kFloat).device(t.device())) *
                        (-std::log(max_period));
  exponent = exponent / (static_cast<double>(half) - downscale_freq_shift);
  at::Tensor arg = t.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);
  if (scale != 1.0) arg = arg * scale;
  at::Tensor emb = flip_sin_to_cos ? at::cat({at::cos(arg), at::sin(arg)}, -1) : at::cat({at::sin(arg), at::cos(arg)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

}  // namespace omniflux::nn
