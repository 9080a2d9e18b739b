#pragma once
// Sinusoidal timestep embedding (diffusers get_timestep_embedding), used by the FLUX DiT for the
// timestep and the distilled guidance.
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace omniflux::nn {

// t [B] (any dtype) -> [B, dim] float32. freq[k] = exp(-ln(max_period) * k / (dim/2 - shift)),
// arg = t * freq * scale, output [sin | cos], or [cos | sin] when flip_sin_to_cos.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, bool flip_sin_to_cos = true,
                              double downscale_freq_shift = 0.0, double scale = 1.0,
                              double max_period = 10000.0);

}  // namespace omniflux::nn
