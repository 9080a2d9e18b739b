#include "nn/rotary.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux::nn {

at::Tensor rope_inv_freq(int64_t dim, double theta) {
  // HF: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
  at::Tensor idx = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  return 1.0 / at::pow(at::scalar_tensor(theta, at::kFloat), idx);
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& positions, const at::Tensor& inv_freq) {
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq.to(positions.device()).to(at::kFloat);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

static at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}

at::Tensor apply_rope_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  at::Tensor xf = x.to(at::kFloat);
  return (xf * cos + rotate_half(xf) * sin).to(x.scalar_type());
}

at::Tensor apply_rope_interleaved(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // x viewed as pairs [..., D/2, 2]: rotated = (-x1, x0) interleaved back.
  at::Tensor xf = x.to(at::kFloat);
  auto pairs = xf.unflatten(-1, {-1, 2});
  at::Tensor rot = at::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).flatten(-2);
  return (xf * cos + rot * sin).to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> rope_axes_cos_sin(const at::Tensor& ids, const std::vector<int64_t>& axes_dims,
                                                    double theta) {
  if (ids.dim() != 2 || ids.size(1) != static_cast<int64_t>(axes_dims.size()))
    throw Error("position ids do not match the rotary axes", "nn::rope_axes_cos_sin",
                "[L, " + std::to_string(axes_dims.size()) + "]", shape_str(ids.sizes().vec()));
  // diffusers: pos = ids.float(), then float64 frequencies, outer product promoted to float64.
  at::Tensor pos = ids.to(at::kFloat).to(at::kDouble);
  std::vector<at::Tensor> coss, sins;
  for (size_t a = 0; a < axes_dims.size(); ++a) {
    const int64_t d = axes_dims[a];
    if (d <= 0 || d % 2 != 0)
      throw Error("rotary axis dim must be positive and even", "nn::rope_axes_cos_sin", "even", std::to_string(d));
    at::Tensor expo = at::arange(0, d, 2, at::TensorOptions().dtype(at::kDouble).device(ids.device())) /
                      static_cast<double>(d);
    at::Tensor inv = at::reciprocal(at::pow(theta, expo));              // [d/2]
    at::Tensor ang = at::outer(pos.select(1, static_cast<int64_t>(a)), inv);  // [L, d/2]
    coss.push_back(ang.cos().repeat_interleave(2, 1).to(at::kFloat));
    sins.push_back(ang.sin().repeat_interleave(2, 1).to(at::kFloat));
  }
  return {at::cat(coss, -1), at::cat(sins, -1)};
}

}  // namespace omniflux::nn
