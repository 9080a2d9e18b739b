#include "omniflux/io/quant_format.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux {

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "fp8") return WeightFormat::Fp8;
  if (name == "int8") return WeightFormat::Int8;
  if (name == "bf16") return WeightFormat::Bf16;
  throw Error("unknown weight format", "--weights", "fp8, int8 or bf16", "'" + name + "'");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::Fp8: return "fp8";
    case WeightFormat::Int8: return "int8";
    case WeightFormat::Bf16: return "bf16";
  }
  return "fp8";
}

namespace {
constexpr double kInt8Max = 127.0;
}  // namespace

QuantizedWeight quantize_weight(const at::Tensor& w, WeightFormat format) {
  if (w.dim() != 2) throw Error("only 2-D weights are quantised", "quantize_weight", "[out, in]", shape_str(w.sizes().vec()));
  if (format == WeightFormat::Bf16)
    throw Error("bf16 is a cast, not a quantisation", "quantize_weight", "fp8 or int8", weight_format_name(format));
  at::Tensor wf = w.to(at::kFloat);
  at::Tensor amax = wf.abs().amax(1, /*keepdim=*/true);  // [out, 1]
  const double qmax = format == WeightFormat::Fp8 ? kFp8Max : kInt8Max;
  at::Tensor scale = at::where(amax > 0, amax / qmax, at::ones_like(amax));
  at::Tensor q = wf / scale;
  QuantizedWeight out;
  // Casting to e4m3fn rounds to nearest even; values are within +-448 by construction.
  out.codes = format == WeightFormat::Fp8 ? q.clamp(-kFp8Max, kFp8Max).to(at::ScalarType::Float8_e4m3fn)
                                          : q.round().clamp(-kInt8Max, kInt8Max).to(at::kChar);
  out.scale = scale.contiguous();
  return out;
}

at::Tensor dequantize_weight(const at::Tensor& codes, const at::Tensor& scale, c10::ScalarType dtype) {
  return (codes.to(at::kFloat) * scale.to(at::kFloat)).to(dtype);
}

}  // namespace omniflux
