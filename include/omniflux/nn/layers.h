#pragma once
// Weight holders for the common layers, loaded through a WeightView by their checkpoint names
// (candle's `linear(in, out, vb.pp("to_q"))`). Calling one runs the shared op from nn/ops.h.
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "omniflux/io/weights.h"

namespace omniflux::nn {

// `name.weight` [out, in] and, when `bias`, `name.bias` [out].
struct Linear {
  at::Tensor weight, bias;
  static Linear load(const WeightView& w, const std::string& name, int64_t in, int64_t out, bool bias = true);
  at::Tensor operator()(const at::Tensor& x) const;
};

// `name.weight` [out, in, k, k] and `name.bias` [out]; input [B, in, H, W].
struct Conv2d {
  at::Tensor weight, bias;
  int64_t stride = 1, padding = 0;
  static Conv2d load(const WeightView& w, const std::string& name, int64_t in, int64_t out, int64_t kernel,
                     int64_t stride = 1, int64_t padding = 0);
  at::Tensor operator()(const at::Tensor& x) const;
};

// LayerNorm / GroupNorm with affine `name.weight`, `name.bias` [channels] (fp32 math, nn/ops.h).
struct LayerNorm {
  at::Tensor weight, bias;
  double eps = 1e-5;
  static LayerNorm load(const WeightView& w, const std::string& name, int64_t dim, double eps);
  at::Tensor operator()(const at::Tensor& x) const;
};
struct GroupNorm {
  at::Tensor weight, bias;
  int64_t groups = 32;
  double eps = 1e-6;
  static GroupNorm load(const WeightView& w, const std::string& name, int64_t channels, int64_t groups, double eps);
  at::Tensor operator()(const at::Tensor& x) const;
};

}  // namespace omniflux::nn
