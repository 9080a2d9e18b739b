#include "nn/ops.h"

#include <cmath>

#include <ATen/ATen.h>

namespace omniflux::nn {

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  h = h.to(x.scalar_type());
  return weight.defined() ? weight * h : h;
}

// fp32 inputs run as they are. Half-precision inputs go to the native kernels, which accumulate in
// fp32 and round once, as torch.nn.LayerNorm / GroupNorm do on bf16 in the references; an explicit
// upcast would only add two full-size fp32 copies (1 GiB in a 1024^2 VAE decode).
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  const int64_t d = x.size(-1);
  const auto t = at::isReducedFloatingType(x.scalar_type()) ? x.scalar_type() : at::kFloat;
  at::Tensor w = weight.defined() ? weight.to(t) : at::Tensor();
  at::Tensor b = bias.defined() ? bias.to(t) : at::Tensor();
  return at::layer_norm(x.to(t), {d}, w, b, eps).to(x.scalar_type());
}

at::Tensor group_norm(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                      const at::Tensor& bias, double eps) {
  const auto t = at::isReducedFloatingType(x.scalar_type()) ? x.scalar_type() : at::kFloat;
  at::Tensor w = weight.defined() ? weight.to(t) : at::Tensor();
  at::Tensor b = bias.defined() ? bias.to(t) : at::Tensor();
  return at::group_norm(x.to(t), groups, w, b, eps).to(x.scalar_type());
}

at::Tensor silu(const at::Tensor& x) { return at::silu(x); }
at::Tensor gelu(const at::Tensor& x) { return at::gelu(x); }
at::Tensor gelu_tanh(const at::Tensor& x) { return at::gelu(x, "tanh"); }
at::Tensor quick_gelu(const at::Tensor& x) { return x * at::sigmoid(1.702 * x); }

}  // namespace omniflux::nn
