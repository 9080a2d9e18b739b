#pragma once
// Weight holders for the common layers, loaded through a WeightView by their checkpoint names
// (candle's `linear(in, out, vb.pp("to_q"))`). Calling one runs the shared op from nn/ops.h.
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include <c10/core/Device.h>

#include "omniflux/io/weights.h"

namespace omniflux::nn {

// `name.weight` [out, in] and, when `bias`, `name.bias` [out]. A quantised checkpoint stores the
// weight as fp8 e4m3fn or int8 codes with `name.weight_scale` [out, 1] (io/quant_format.h); the layer then
// keeps the codes as stored and dequantises (or multiplies in fp8) on each call.
// A CPU Linear weight [out, in] with out > in, stored transposed: a [out, in] view of [in, out]
// memory. MKL's matrix-vector path (decode: 1 or 2 rows) reads that layout 1.3x to 1.9x faster here
// (qkv, gate|up, LM heads), while matrix-matrix products run as fast either way and out <= in
// weights are faster as they are. The LMs use it for their resident weights (a copy: models that
// run many rows at once keep their zero-copy mapped weights). Other devices, quantised codes and
// 1-D tensors pass unchanged.
at::Tensor cpu_gemv_layout(const at::Tensor& w);

struct Linear {
  at::Tensor weight, bias;
  at::Tensor weight_scale;  // [out, 1] float32 when `weight` holds quantised codes
  // `dtype` overrides the runtime's compute dtype for a plain weight (T5 keeps `wo` in fp32).
  static Linear load(const WeightView& w, const std::string& name, int64_t in, int64_t out, bool bias = true,
                     c10::ScalarType dtype = c10::ScalarType::Undefined);
  // One layer computing all `parts` at once, outputs concatenated in order (q|k|v fusion at load).
  // The parts must all be quantised the same way or all be plain.
  static Linear fuse(const std::vector<Linear>& parts);
  at::Tensor operator()(const at::Tensor& x) const;
  bool quantized() const { return weight_scale.defined(); }
  // For a layer that runs one or two rows at a time (LM decode): a plain weight on the CPU takes
  // cpu_gemv_layout, unless `store` streams blocks (sequential offload builds them again for every
  // use, where the copy would cost more than it saves).
  void prefer_decode_layout(const WeightStore& store);
  int64_t out_features() const { return weight.size(0); }
  // Rows (dim 0: outputs) or columns (dim 1: inputs) [begin, begin + n), contiguous: a rank's part
  // under tensor parallelism. Quantised codes keep their per-output-channel scales: sliced with the
  // rows, whole for a column slice (each output row keeps its scale; the ranks' partial sums add up
  // to the whole product). The bias follows the rows; a column slice of a biased layer is refused
  // (the bias would be added on every rank).
  Linear slice(int64_t dim, int64_t begin, int64_t n) const;
  void to(c10::Device device);
  // Every tensor the layer holds (for moving a block between devices).
  template <class F>
  void for_each_tensor(F&& f) {
    f(weight);
    f(bias);
    f(weight_scale);
  }
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
