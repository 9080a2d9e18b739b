// The fp8 activation quantiser the CUDA fp8 linear feeds to _scaled_mm (nn/quant.h) and the weight
// quantiser of io/quant_format.h, against reference quantisations written element by element. They
// run on the CPU: the e4m3fn dtype and its rounding are the same there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/quant_format.h"
#include "nn/quant.h"

using namespace omniflux;

namespace {

// Per row: amax = max |x| (x read in fp32), scale = max(amax, 1e-12) / 448, code = e4m3fn(x / scale)
// with |x / scale| clamped to 448, one element at a time.
nn::Fp8Activation reference(const at::Tensor& x) {
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t M = xf.size(0), K = xf.size(1);
  nn::Fp8Activation r;
  r.scale = at::empty({M, 1}, at::kFloat);
  at::Tensor q = at::empty({M, K}, at::kFloat);
  const float* px = xf.data_ptr<float>();
  float* pq = q.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    float amax = 0;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(px[m * K + k]));
    const float s = std::max(amax, 1e-12f) / 448.0f;
    r.scale[m][0] = s;
    for (int64_t k = 0; k < K; ++k) pq[m * K + k] = std::clamp(px[m * K + k] / s, -448.0f, 448.0f);
  }
  r.codes = q.to(at::ScalarType::Float8_e4m3fn);
  return r;
}

void expect_same(const at::Tensor& x, const char* what) {
  SCOPED_TRACE(what);
  const nn::Fp8Activation got = nn::quantize_activation_fp8(x), ref = reference(x);
  ASSERT_EQ(got.codes.scalar_type(), at::ScalarType::Float8_e4m3fn);
  ASSERT_EQ(got.scale.scalar_type(), at::kFloat);
  ASSERT_EQ(got.codes.sizes(), x.sizes());
  ASSERT_EQ(got.scale.sizes(), (std::vector<int64_t>{x.size(0), 1}));
  EXPECT_TRUE(got.codes.is_contiguous());  // row-major, as _scaled_mm's first operand must be
  EXPECT_TRUE(at::equal(got.scale, ref.scale));
  // Bit for bit: the codes as bytes.
  EXPECT_TRUE(at::equal(got.codes.view(at::kByte), ref.codes.view(at::kByte)));
  // And the codes stand for x: e4m3fn keeps 3 mantissa bits (relative error <= 2^-4), with
  // subnormals below 2^-6 of the scale.
  const at::Tensor back = got.codes.to(at::kFloat) * got.scale, xf = x.to(at::kFloat);
  EXPECT_TRUE(((back - xf).abs() <= xf.abs() * 0.0625 + got.scale * std::ldexp(1.0, -9)).all().item<bool>());
  EXPECT_FALSE(at::isnan(got.codes.to(at::kFloat)).any().item<bool>());
}

// Per row: amax = max |w| in fp32, scale = amax / qmax (1 for an all-zero row), code = w / scale
// clamped to +-448 and cast to e4m3fn, or rounded half to even and clamped to +-127 for int8.
QuantizedWeight reference_weight(const at::Tensor& w, WeightFormat f) {
  const at::Tensor wf = w.to(at::kFloat).contiguous();
  const int64_t O = wf.size(0), I = wf.size(1);
  const float qmax = f == WeightFormat::Fp8 ? 448.0f : 127.0f;
  QuantizedWeight r;
  r.scale = at::empty({O, 1}, at::kFloat);
  at::Tensor q = at::empty({O, I}, at::kFloat);
  const float* pw = wf.data_ptr<float>();
  float* pq = q.data_ptr<float>();
  for (int64_t o = 0; o < O; ++o) {
    float amax = 0;
    for (int64_t i = 0; i < I; ++i) amax = std::max(amax, std::fabs(pw[o * I + i]));
    const float s = amax > 0 ? amax / qmax : 1.0f;
    r.scale[o][0] = s;
    for (int64_t i = 0; i < I; ++i) {
      const float v = pw[o * I + i] / s;
      pq[o * I + i] = f == WeightFormat::Fp8 ? std::clamp(v, -qmax, qmax) : std::clamp(std::nearbyint(v), -qmax, qmax);
    }
  }
  r.codes = f == WeightFormat::Fp8 ? q.to(at::ScalarType::Float8_e4m3fn) : q.to(at::kChar);
  return r;
}

}  // namespace

TEST(QuantizeWeight, EqualsTheReferenceBitForBit) {
  at::manual_seed(5);
  // Rows at their own magnitudes, an all-zero row, one with a single large value, one evenly spaced.
  at::Tensor w = at::randn({23, 40}) * at::pow(10.0, at::linspace(-3, 3, 23)).unsqueeze(1);
  w[4].zero_();
  w[8][11] = 5.0e3;
  w[12] = at::arange(-20, 20).to(at::kFloat) + 0.5;
  for (WeightFormat f : {WeightFormat::Fp8, WeightFormat::Int8}) {
    for (const at::Tensor& x : {w, w.to(at::kBFloat16)}) {
      SCOPED_TRACE(std::string(weight_format_name(f)) + " from " + c10::toString(x.scalar_type()));
      const QuantizedWeight got = quantize_weight(x, f), ref = reference_weight(x, f);
      ASSERT_EQ(got.codes.scalar_type(), f == WeightFormat::Fp8 ? at::ScalarType::Float8_e4m3fn : at::kChar);
      ASSERT_EQ(got.scale.sizes(), (std::vector<int64_t>{x.size(0), 1}));
      EXPECT_TRUE(at::equal(got.scale, ref.scale));
      EXPECT_TRUE(at::equal(got.codes.view(at::kByte), ref.codes.view(at::kByte)));
      EXPECT_EQ(got.scale[4].item<float>(), 1.0f);
      // dequantize_weight is codes * scale: within half a step of the weight for int8.
      const at::Tensor back = dequantize_weight(got.codes, got.scale, at::kFloat);
      if (f == WeightFormat::Int8) EXPECT_TRUE(((back - x.to(at::kFloat)).abs() <= got.scale * 0.5001).all().item<bool>());
    }
  }
}

TEST(QuantizeWeight, RefusesWhatItCannotQuantise) {
  EXPECT_THROW(quantize_weight(at::randn({8}), WeightFormat::Int8), Error);
  EXPECT_THROW(quantize_weight(at::randn({2, 8}), WeightFormat::Bf16), Error);  // a cast, not codes
}

// The --weights spellings, both ways; anything else (case included) is an Error naming the flag
// and the value.
TEST(WeightFormatNames, ParseAndNameRoundTrip) {
  for (WeightFormat f : {WeightFormat::Fp8, WeightFormat::Int8, WeightFormat::Bf16})
    EXPECT_EQ(parse_weight_format(weight_format_name(f)), f);
  EXPECT_STREQ(weight_format_name(WeightFormat::Fp8), "fp8");
  EXPECT_STREQ(weight_format_name(WeightFormat::Int8), "int8");
  EXPECT_STREQ(weight_format_name(WeightFormat::Bf16), "bf16");
  for (const char* bad : {"", "FP8", "fp16", "int4", "none", "bf16 "}) {
    try {
      parse_weight_format(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.where(), "--weights");
      EXPECT_EQ(e.expected(), "fp8, int8 or bf16");
      EXPECT_EQ(e.got(), "'" + std::string(bad) + "'");
    }
  }
}

TEST(QuantizeActivationFp8, EqualsTheReferenceBitForBit) {
  at::manual_seed(3);
  // 37 rows (not a multiple of 16: no padding is needed or done), each at its own magnitude, one
  // all-zero row and one with a single large value.
  at::Tensor x = at::randn({37, 96}) * at::pow(10.0, at::linspace(-4, 4, 37)).unsqueeze(1);
  x[5].zero_();
  x[9][17] = 3.0e4;
  expect_same(x.to(at::kBFloat16), "bfloat16");
  expect_same(x, "float32");
  expect_same(x.to(at::kHalf).clamp(-6e4, 6e4), "float16");
  // A non-contiguous input (a transposed view) gives contiguous codes all the same.
  expect_same(x.to(at::kBFloat16).t().contiguous().t(), "transposed view");
  expect_same(x.to(at::kBFloat16).slice(0, 0, 1), "one row (decode)");
}

TEST(QuantizeActivationFp8, RefusesWhatItCannotQuantise) {
  EXPECT_THROW(nn::quantize_activation_fp8(at::randn({8})), Error);
  EXPECT_THROW(nn::quantize_activation_fp8(at::ones({2, 8}, at::kLong)), Error);
}
