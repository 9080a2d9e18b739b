#include "nn/quant.h"

#include <limits>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/ops.h"

#if OMNIFLUX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace omniflux::nn {

namespace {
constexpr double kActivationEps = 1e-12;  // an all-zero row gets a tiny scale, not a division by zero
}  // namespace

Fp8Activation quantize_activation_fp8(const at::Tensor& x) {
  if (x.dim() != 2 || !at::isFloatingType(x.scalar_type()))
    throw Error("the fp8 activation quantiser takes a 2-D floating-point tensor", "nn::quantize_activation_fp8",
                "[M, K] float32, bfloat16 or float16",
                shape_str(x.sizes().vec()) + " " + std::string(c10::toString(x.scalar_type())));
  Fp8Activation a;
  // max |x| per row in x's own dtype (exact: a maximum rounds nothing), one reduction over x.
  at::Tensor amax = at::linalg_vector_norm(x, std::numeric_limits<double>::infinity(), {1}, /*keepdim=*/true);
  a.scale = amax.to(at::kFloat).clamp_min_(kActivationEps).div_(kFp8Max);  // [M, 1], tiny
  // One pass over x: x / scale computed in fp32 and written as e4m3fn, row-major as _scaled_mm wants.
  // |x / scale| <= 448 up to one fp32 rounding, which the cast rounds back to 448 (no clamp needed).
  a.codes = at::empty(x.sizes(), x.options().dtype(at::ScalarType::Float8_e4m3fn));
  at::div_out(a.codes, x, a.scale);
  return a;
}

namespace {

#if OMNIFLUX_WITH_CUDA
bool has_fp8_matmul(const at::Tensor& t) {
  if (!t.is_cuda()) return false;
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(t.device().index());
  return p->major > 8 || (p->major == 8 && p->minor >= 9);
}

// Dynamic per-token fp8 quantisation of x [M, K], then a rowwise-scaled fp8 matmul. LibTorch 2.11
// checks K and N (multiples of 16) but not M, so the rows go in as they are.
at::Tensor fp8_linear(const at::Tensor& x2, const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& bias,
                      c10::ScalarType out_dtype) {
  const Fp8Activation a = quantize_activation_fp8(x2);
  // codes [N, K] row-major: its transpose is the column-major [K, N] the kernel wants. The weight
  // scale [N, 1] fp32, contiguous since load, is as a view the [1, N] row of column scales.
  const at::Tensor w = codes.contiguous();  // a no-op for loaded weights
  const at::Tensor sw = scale.contiguous().view({1, codes.size(0)});
  // 2.11 refuses a bias with a float32 output ("Bias is not supported when out_dtype is set to
  // Float32"): there it is added after the matmul.
  const bool bias_in_mm = bias.defined() && out_dtype != at::kFloat;
  std::optional<at::Tensor> b;
  if (bias_in_mm) b = bias.scalar_type() == out_dtype ? bias : bias.to(out_dtype);
  at::Tensor y = at::_scaled_mm(a.codes, w.t(), a.scale, sw, b, std::nullopt, out_dtype, /*use_fast_accum=*/false);
  if (bias.defined() && !bias_in_mm) y.add_(bias.to(out_dtype));
  return y;
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
