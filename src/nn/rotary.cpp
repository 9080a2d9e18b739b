#include "omniflux/nn/rotary.h"

#include <ATen/ATen.h>

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

}  // namespace omniflux::nn
