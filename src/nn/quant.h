#pragma once
// The quantised linear layer's arithmetic. The weights' format (codes, per-output-channel scales,
// quantize_weight / dequantize_weight) is io's: io/quant_format.h.
#include <ATen/core/Tensor.h>

#include "omniflux/io/quant_format.h"

namespace omniflux::nn {

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
