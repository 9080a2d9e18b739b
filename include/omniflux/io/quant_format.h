#pragma once
// The weight formats of quantised checkpoints and of omniflux-quantize, and how quantised weights
// are stored: fp8 e4m3fn or int8 codes with one fp32 scale per output channel
// (w[o, :] = codes[o, :] * scale[o]), as `<name>.weight` and `<name>.weight_scale` [out, 1], the
// layout vLLM reads (compressed-tensors, "channel" strategy). A storage convention, so io owns it:
// the quantizer writes it, WeightStore reads it, the linear layer multiplies with it.
#include <string>

#include <ATen/core/Tensor.h>

namespace omniflux {

// Bf16 is a plain cast (no codes, no scale); Fp8 and Int8 are the quantised formats.
enum class WeightFormat { Fp8, Int8, Bf16 };

constexpr double kFp8Max = 448.0;  // largest finite float8_e4m3fn (weights and activations)
// "fp8", "int8" or "bf16" (the --weights spellings); anything else is an Error.
WeightFormat parse_weight_format(const std::string& name);
const char* weight_format_name(WeightFormat f);

struct QuantizedWeight {
  at::Tensor codes;  // [out, in] Float8_e4m3fn or Char
  at::Tensor scale;  // [out, 1] float32
};

// Symmetric per-output-channel quantisation of a 2-D weight (computed in fp32): the largest |w| of
// each row maps to the format's largest value (448 for e4m3fn, 127 for int8). All-zero rows get
// scale 1. `format` must be Fp8 or Int8.
QuantizedWeight quantize_weight(const at::Tensor& w, WeightFormat format);
// codes * scale in fp32, then cast to `dtype`.
at::Tensor dequantize_weight(const at::Tensor& codes, const at::Tensor& scale, c10::ScalarType dtype);

}  // namespace omniflux
