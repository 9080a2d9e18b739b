#include "omniflux/nn/quant.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/nn/ops.h"

#if OMNIFLUX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace omniflux::nn {

QuantType parse_quant_type(const std::string& name) {
  if (name == "fp8") return QuantType::Fp8;
  if (name == "int8") return QuantType::Int8;
  if (name == "none" || name == "bf16") return QuantType::None;
  throw Error("unknown weight type", "--weights", "fp8, int8 or bf16", "'" + name + "'");
}

const char* quant_type_name(QuantType t) {
  switch (t) {
    case QuantType::Fp8: return "fp8";
    case QuantType::Int8: return "int8";
    case QuantType::None: return "none";
  }
  return "none";
}

namespace {
constexpr double kFp8Max = 448.0;  // largest finite float8_e4m3fn
constexpr double kInt8Max = 127.0;
}  // namespace

QuantizedWeight quantize_weight(const at::Tensor& w, QuantType type) {
  if (w.dim() != 2) throw Error("only 2-D weights are quantised", "nn::quantize_weight", "[out, in]", shape_str(w.sizes().vec()));
  if (type == QuantType::None) throw Error("no quantisation type given", "nn::quantize_weight");
  at::Tensor wf = w.to(at::kFloat);
  at::Tensor amax = wf.abs().amax(1, /*keepdim=*/true);  // [out, 1]
  const double qmax = type == QuantType::Fp8 ? kFp8Max : kInt8Max;
  at::Tensor scale = at::where(amax > 0, amax / qmax, at::ones_like(amax));
  at::Tensor q = wf / scale;
  QuantizedWeight out;
  // Casting to e4m3fn rounds to nearest even; values are within +-448 by construction.
  out.codes = type == QuantType::Fp8 ? q.clamp(-kFp8Max, kFp8Max).to(at::ScalarType::Float8_e4m3fn)
                                     : q.round().clamp(-kInt8Max, kInt8Max).to(at::kChar);
  out.scale = scale.contiguous();
  return out;
}

at::Tensor dequantize_weight(const at::Tensor& codes, const at::Tensor& scale, c10::ScalarType dtype) {
  return (codes.to(at::kFloat) * scale.to(at::kFloat)).to(dtype);
}

namespace {

#if OMNIFLUX_WITH_CUDA
bool has_fp8_matmul(const at::Tensor& t) {
  if (!t.is_cuda()) return false;
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(t.device().index());
  return p->major > 8 || (p->major == 8 && p->minor >= 9);
}

// Dynamic per-token fp8 quantisation of x [M, K], then a rowwise-scaled fp8 matmul.
at::Tensor fp8_linear(const at::Tensor& x2, const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& bias,
                      c10::ScalarType out_dtype) {
  const int64_t m = x2.size(0);
  // _scaled_mm wants M a multiple of 16 for the fp8 kernels: pad the token rows with zeros.
  const int64_t mp = (m + 15) / 16 * 16;
  at::Tensor x = mp == m ? x2 : at::constant_pad_nd(x2, {0, 0, 0, mp - m});
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor amax = xf.abs().amax(1, /*keepdim=*/true).clamp_min(1e-12);  // [M, 1]
  at::Tensor x_scale = amax / kFp8Max;
  at::Tensor xq = (xf / x_scale).clamp(-kFp8Max, kFp8Max).to(at::ScalarType::Float8_e4m3fn);
  // codes [N, K] row-major: its transpose is the column-major [K, N] the kernel wants.
  at::Tensor y = at::_scaled_mm(xq, codes.t(), x_scale, scale.t().contiguous(),
                                bias.defined() ? std::optional<at::Tensor>(bias.to(out_dtype)) : std::nullopt,
                                std::nullopt, out_dtype, /*use_fast_accum=*/false);
  return mp == m ? y : y.slice(0, 0, m);
}
#endif

}  // namespace

at::Tensor quantized_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale,
                            const at::Tensor& bias) {
  if (x.size(-1) != codes.size(1))
    throw Error("linear input has the wrong width", "nn::quantized_linear", std::to_string(codes.size(1)),
                std::to_string(x.size(-1)));
#if OMNIFLUX_WITH_CUDA
  if (codes.scalar_type() == at::ScalarType::Float8_e4m3fn && has_fp8_matmul(codes) && codes.size(0) % 16 == 0 &&
      codes.size(1) % 16 == 0) {
    at::Tensor x2 = x.reshape({-1, x.size(-1)});
    at::Tensor y = fp8_linear(x2, codes, scale, bias, x.scalar_type());
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = codes.size(0);
    return y.view(shape);
  }
#endif
  return linear(x, dequantize_weight(codes, scale, x.scalar_type()), bias.defined() ? bias.to(x.scalar_type()) : bias);
}

}  // namespace omniflux::nn
