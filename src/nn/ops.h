#pragma once
// Shared building blocks every model uses. Numerics follow the references: norms and softmax run
// in fp32 and cast back (HF Qwen2RMSNorm, LayerNorm/GroupNorm upcasts, eager attention's
// softmax(dtype=float32)).
#include <optional>

#include <ATen/core/Tensor.h>

namespace omniflux::nn {

// x @ w^T + b; b may be undefined.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

// RMSNorm: x * rsqrt(mean(x^2) + eps) in fp32, cast back to x's dtype, then * weight (HF
// Qwen2RMSNorm order). `weight` may be undefined (no affine).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// LayerNorm over the last dim in fp32, cast back. weight/bias may be undefined.
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);
// GroupNorm on [N, C, ...] in fp32, cast back.
at::Tensor group_norm(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                      const at::Tensor& bias, double eps);

at::Tensor silu(const at::Tensor& x);
at::Tensor gelu(const at::Tensor& x);            // exact erf GELU
at::Tensor gelu_tanh(const at::Tensor& x);       // tanh approximation ("gelu_pytorch_tanh", T5 gelu_new)
at::Tensor quick_gelu(const at::Tensor& x);      // x * sigmoid(1.702 x) (CLIP)

}  // namespace omniflux::nn
