#pragma once
// Weight quantisation shared by the linear layer and omniflux-quantize: fp8 e4m3fn or int8 codes
// with one fp32 scale per output channel (w[o, :] = codes[o, :] * scale[o]), stored as
// `<name>.weight` and `<name>.weight_scale` [out, 1], the layout vLLM reads (compressed-tensors,
// "channel" strategy).
#include <string>

#include <ATen/core/Tensor.h>

namespace omniflux::nn {

enum class QuantType { None, Fp8, Int8 };
const char* quant_type_name(QuantType t);

struct QuantizedWeight {
  at::Tensor codes;  // [out, in] Float8_e4m3fn or Char
  at::Tensor scale;  // [out, 1] float32
};

// Symmetric per-output-channel quantisation of a 2-D weight (computed in fp32): the largest |w| of
// each row maps to the format's largest value (448 for e4m3fn, 127 for int8). All-zero rows get
// scale 1.
QuantizedWeight quantize_weight(const at::Tensor& w, QuantType type);
// codes * scale in fp32, then cast to `dtype`.
at::Tensor dequantize_weight(const at::Tensor& codes, const at::Tensor& scale, c10::ScalarType dtype);

// Dynamic per-token fp8 quantisation of an activation x [M, K] (any floating dtype), as the fp8
// linear feeds _scaled_mm: scale[m] = max(max_k |x[m, k]|, 1e-12) / 448 (fp32, [M, 1]) and
// codes = e4m3fn(x / scale) computed in fp32, contiguous [M, K]. One reduction and one
// divide-and-cast pass over x.
struct Fp8Activation {
  at::Tensor codes;  // [M, K] Float8_e4m3fn, row-major
  at::Tensor scale;  // [M, 1] float32
};
Fp8Activation quantize_activation_fp8(const at::Tensor& x);

// y = x @ (codes * scale)^T + bias. On CUDA with fp8 codes and fp8 tensor cores (sm_89+), x is
// quantised per token on the fly and at::_scaled_mm multiplies in fp8; elsewhere the weight is
// dequantised to x's dtype for this call only.
at::Tensor quantized_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale,
                            const at::Tensor& bias);

}  // namespace omniflux::nn
