// Shared blocks against independent computations (explicit loops or textbook formulas).
#include <gtest/gtest.h>

#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/quant_format.h"
#include "nn/attention.h"
#include "nn/debug.h"
#include "nn/layers.h"
#include "nn/ops.h"
#include "nn/rotary.h"

using namespace omniflux;

namespace {
// softmax(q.k * scale + bias over allowed keys) . v, one query at a time, in double. bias (optional)
// [B or 1, H or 1, Lq, Lk]; scale 0 means 1/sqrt(d).
at::Tensor naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::function<bool(int64_t, int64_t, int64_t)>& allowed,
                           const at::Tensor& bias = {}, double scale = 0) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Hkv = k.size(1), Lk = k.size(2);
  at::Tensor out = at::zeros({B, H, Lq, D}, at::kDouble);
  auto qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  const at::Tensor bd = bias.defined() ? bias.to(at::kDouble) : at::Tensor();
  if (scale == 0) scale = 1.0 / std::sqrt(double(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / (H / Hkv);
      for (int64_t i = 0; i < Lq; ++i) {
        std::vector<double> w(Lk, 0.0);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < Lk; ++j)
          if (allowed(b, i, j)) {
            w[j] = (qd[b][h][i] * kd[b][hk][j]).sum().item<double>() * scale;
            if (bd.defined()) w[j] += bd[bd.size(0) == 1 ? 0 : b][bd.size(1) == 1 ? 0 : h][i][j].item<double>();
            mx = std::max(mx, w[j]);
          }
        for (int64_t j = 0; j < Lk; ++j) {
          w[j] = allowed(b, i, j) ? std::exp(w[j] - mx) : 0.0;
          sum += w[j];
        }
        for (int64_t j = 0; j < Lk; ++j) out[b][h][i] += (w[j] / sum) * vd[b][hk][j];
      }
    }
  return out.to(at::kFloat);
}
}  // namespace

TEST(Attention, GroupedQueryCausalMatchesNaive) {
  at::manual_seed(0);
  at::Tensor q = at::randn({2, 4, 5, 8}), k = at::randn({2, 2, 5, 8}), v = at::randn({2, 2, 5, 8});
  nn::AttentionOptions opt;
  opt.causal = true;
  at::Tensor got = nn::attention(q, k, v, opt);
  at::Tensor ref = naive_attention(q, k, v, [](int64_t, int64_t i, int64_t j) { return j <= i; });
  EXPECT_LT((got - ref).abs().max().item<double>(), 1e-5);
}

TEST(Attention, CausalWithCacheIsEndAligned) {
  // 2 new queries against 6 keys (4 cached): query i sees keys <= 4 + i.
  at::manual_seed(1);
  at::Tensor q = at::randn({1, 2, 2, 4}), k = at::randn({1, 2, 6, 4}), v = at::randn({1, 2, 6, 4});
  nn::AttentionOptions opt;
  opt.causal = true;
  at::Tensor ref = naive_attention(q, k, v, [](int64_t, int64_t i, int64_t j) { return j <= 4 + i; });
  EXPECT_LT((nn::attention(q, k, v, opt) - ref).abs().max().item<double>(), 1e-5);
}

TEST(Attention, PaddingMaskBoolAndAdditiveAgree) {
  at::manual_seed(2);
  at::Tensor q = at::randn({2, 2, 3, 4}), k = at::randn({2, 2, 5, 4}), v = at::randn({2, 2, 5, 4});
  at::Tensor keep = at::ones({2, 1, 1, 5}, at::kBool);
  keep[1][0][0].slice(0, 3) = false;  // batch 1: last two keys are padding
  nn::AttentionOptions ob;
  ob.mask = keep;
  nn::AttentionOptions oa;
  oa.mask = at::zeros({2, 1, 1, 5}).masked_fill(keep.logical_not(), -1e9);
  at::Tensor ref = naive_attention(q, k, v, [](int64_t b, int64_t, int64_t j) { return b == 0 || j < 3; });
  EXPECT_LT((nn::attention(q, k, v, ob) - ref).abs().max().item<double>(), 1e-5);
  EXPECT_LT((nn::attention(q, k, v, oa) - ref).abs().max().item<double>(), 1e-5);
}

TEST(Attention, SegmentsAreBlockDiagonal) {
  at::manual_seed(3);
  at::Tensor q = at::randn({3, 7, 4}), k = at::randn({3, 7, 4}), v = at::randn({3, 7, 4});
  at::Tensor cu = at::tensor({0, 2, 7}, at::kLong);
  at::Tensor got = nn::segment_attention(q, k, v, cu);
  auto seg = [](int64_t t) { return t < 2 ? 0 : 1; };
  at::Tensor ref = naive_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                   [&](int64_t, int64_t i, int64_t j) { return seg(i) == seg(j); });
  EXPECT_LT((got - ref.squeeze(0)).abs().max().item<double>(), 1e-5);
  EXPECT_THROW(nn::segment_attention(q, k, v, at::tensor({0, 5}, at::kLong)), Error);
}

TEST(Attention, GroupedQueryDecodeWithAndWithoutPadding) {
  // One new query per row against a cache (Lq = 1): no causal mask is needed; row 1 has two
  // left-padded keys given as an additive key mask [B, 1, 1, Lk], as the KV cache builds it.
  at::manual_seed(4);
  at::Tensor q = at::randn({2, 6, 1, 8}), k = at::randn({2, 2, 7, 8}), v = at::randn({2, 2, 7, 8});
  nn::AttentionOptions opt;
  opt.causal = true;
  at::Tensor all = naive_attention(q, k, v, [](int64_t, int64_t, int64_t) { return true; });
  EXPECT_LT((nn::attention(q, k, v, opt) - all).abs().max().item<double>(), 1e-5);
  opt.mask = at::zeros({2, 1, 1, 7});
  opt.mask[1][0][0].slice(0, 0, 2).fill_(-3.4e38);
  at::Tensor ref = naive_attention(q, k, v, [](int64_t b, int64_t, int64_t j) { return b == 0 || j >= 2; });
  EXPECT_LT((nn::attention(q, k, v, opt) - ref).abs().max().item<double>(), 1e-5);
}

TEST(Attention, CausalChunkWithPaddingMask) {
  // 3 new queries after 4 cached keys, grouped heads, row 0 left-padded by one key: the causal mask
  // (end-aligned) and the additive key mask both apply.
  at::manual_seed(5);
  at::Tensor q = at::randn({2, 4, 3, 8}), k = at::randn({2, 2, 7, 8}), v = at::randn({2, 2, 7, 8});
  nn::AttentionOptions opt;
  opt.causal = true;
  opt.mask = at::zeros({2, 1, 1, 7});
  opt.mask[0][0][0][0] = -3.4e38;
  at::Tensor ref = naive_attention(q, k, v, [](int64_t b, int64_t i, int64_t j) { return j <= 4 + i && (b == 1 || j > 0); });
  EXPECT_LT((nn::attention(q, k, v, opt) - ref).abs().max().item<double>(), 1e-5);
  // Square causal block with a bool key mask: the two masks are combined as bools.
  at::Tensor q2 = at::randn({2, 4, 7, 8});
  opt.mask = at::ones({2, 1, 1, 7}, at::kBool);
  opt.mask[1][0][0].slice(0, 0, 3).fill_(false);
  at::Tensor ref2 = naive_attention(q2, k, v, [](int64_t b, int64_t i, int64_t j) { return j <= i && (b == 0 || j >= 3); });
  at::Tensor got2 = nn::attention(q2, k, v, opt);
  // Row 1's queries 0..2 see no key at all (undefined output): compare the rest.
  EXPECT_LT((got2[0] - ref2[0]).abs().max().item<double>(), 1e-5);
  EXPECT_LT((got2[1].slice(1, 3) - ref2[1].slice(1, 3)).abs().max().item<double>(), 1e-5);
}

TEST(Attention, ScaleAndFloatBiasAsT5UsesThem) {
  // T5: no 1/sqrt(d) scaling, the relative position bias [1, H, L, L] added to the scores.
  at::manual_seed(6);
  at::Tensor q = at::randn({1, 3, 5, 4}), k = at::randn({1, 3, 5, 4}), v = at::randn({1, 3, 5, 4});
  at::Tensor bias = at::randn({1, 3, 5, 5});
  nn::AttentionOptions opt;
  opt.scale = 1.0;
  opt.mask = bias;
  at::Tensor ref = naive_attention(q, k, v, [](int64_t, int64_t, int64_t) { return true; }, bias, 1.0);
  EXPECT_LT((nn::attention(q, k, v, opt) - ref).abs().max().item<double>(), 1e-5);
}

TEST(Attention, SegmentsOfMixedAndEqualLengths) {
  at::manual_seed(7);
  // Mixed lengths (batched per length), an empty segment, then equal lengths (one batched call).
  for (const std::vector<int64_t>& cuts : {std::vector<int64_t>{0, 3, 6, 8, 11, 11, 12}, std::vector<int64_t>{0, 4, 8, 12}}) {
    at::Tensor q = at::randn({2, 12, 8}).transpose(0, 1).contiguous().transpose(0, 1);  // strided, as the VL tower
    at::Tensor k = at::randn({2, 12, 8}), v = at::randn({2, 12, 8});
    auto seg = [&](int64_t t) {
      int64_t s = 0;
      while (cuts[s + 1] <= t) ++s;
      return s;
    };
    at::Tensor got = nn::segment_attention(q, k, v, at::tensor(cuts, at::kLong), 0.5);
    at::Tensor ref = naive_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                     [&](int64_t, int64_t i, int64_t j) { return seg(i) == seg(j); }, {}, 0.5);
    EXPECT_LT((got - ref.squeeze(0)).abs().max().item<double>(), 1e-5) << "cuts of size " << cuts.size();
  }
  EXPECT_THROW(nn::segment_attention(at::randn({2, 4, 8}), at::randn({2, 5, 8}), at::randn({2, 4, 8}),
                                     at::tensor({0, 4}, at::kLong)),
               Error);
}

TEST(Attention, LeftPaddedRowsWithoutAMaskEqualThePaddedReference) {
  // A CFG pair of prompts of different lengths, left-padded into one batch: per-row key starts
  // (no mask) against the additive key mask the cache used to build, for a prefill (square causal),
  // a prefill after a cached prefix and a decode step, with grouped heads.
  at::manual_seed(21);
  const std::vector<int64_t> pads = {0, 5, 2};
  for (auto [lq, lk] : std::vector<std::pair<int64_t, int64_t>>{{9, 9}, {3, 12}, {1, 13}}) {
    SCOPED_TRACE(std::to_string(lq) + " queries, " + std::to_string(lk) + " keys");
    at::Tensor q = at::randn({3, 4, lq, 16}), k = at::randn({3, 2, lk, 16}), v = at::randn({3, 2, lk, 16});
    nn::AttentionOptions padded;
    padded.causal = true;
    padded.mask = at::zeros({3, 1, 1, lk});
    for (int64_t b = 0; b < 3; ++b) padded.mask[b].slice(-1, 0, pads[b]).fill_(-3.0e38);
    nn::AttentionOptions rows;
    rows.causal = true;
    rows.key_start = pads;
    const at::Tensor ref = nn::attention(q, k, v, padded), got = nn::attention(q, k, v, rows);
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t first = std::max<int64_t>(0, pads[b] - (lk - lq));  // the row's first real query
      EXPECT_TRUE(at::allclose(got[b].slice(1, first), ref[b].slice(1, first), 1e-5, 1e-5)) << "row " << b;
      EXPECT_TRUE(got[b].slice(1, 0, first).eq(0).all().item<bool>()) << "pad queries of row " << b;
    }
    EXPECT_EQ(nn::attention_backend(q, k, v, rows).rfind("rows:", 0), 0u) << nn::attention_backend(q, k, v, rows);
  }
  // No pads: the plain path, and key starts of the wrong count or outside the keys are refused.
  at::Tensor q = at::randn({2, 2, 4, 8}), k = at::randn({2, 2, 4, 8});
  nn::AttentionOptions none;
  none.key_start = {0, 0};
  EXPECT_TRUE(at::equal(nn::attention(q, k, k, none), nn::attention(q, k, k)));
  EXPECT_EQ(nn::attention_backend(q, k, k).rfind("sdpa-", 0), 0u);  // the CPU keeps SDPA's own choice
  none.key_start = {0};
  EXPECT_THROW(nn::attention(q, k, k, none), Error);
  none.key_start = {0, 4};
  EXPECT_THROW(nn::attention(q, k, k, none), Error);
}

TEST(Attention, BadShapesAreErrors) {
  EXPECT_THROW(nn::attention(at::randn({1, 3, 2, 4}), at::randn({1, 2, 2, 4}), at::randn({1, 2, 2, 4})), Error);
  EXPECT_THROW(nn::attention(at::randn({3, 2, 4}), at::randn({3, 2, 4}), at::randn({3, 2, 4})), Error);
}

TEST(Norms, RmsAndLayerNormMatchFormulas) {
  at::manual_seed(4);
  at::Tensor x = at::randn({3, 16}), w = at::randn({16}), b = at::randn({16});
  at::Tensor xd = x.to(at::kDouble);
  at::Tensor rms_ref = xd / (xd.pow(2).mean(-1, true) + 1e-6).sqrt() * w.to(at::kDouble);
  EXPECT_LT((nn::rms_norm(x, w, 1e-6).to(at::kDouble) - rms_ref).abs().max().item<double>(), 1e-5);
  at::Tensor mu = xd.mean(-1, true), var = (xd - mu).pow(2).mean(-1, true);
  at::Tensor ln_ref = (xd - mu) / (var + 1e-5).sqrt() * w.to(at::kDouble) + b.to(at::kDouble);
  EXPECT_LT((nn::layer_norm(x, w, b, 1e-5).to(at::kDouble) - ln_ref).abs().max().item<double>(), 1e-5);
  // bf16 input: computed in fp32, returned in bf16.
  EXPECT_EQ(nn::rms_norm(x.to(at::kBFloat16), w.to(at::kBFloat16), 1e-6).scalar_type(), at::kBFloat16);
}

TEST(Norms, HalfPrecisionLayerAndGroupNormRoundOnce) {
  // bf16 inputs and weights (as loaded for bf16 runs) go to the native kernels: fp32 accumulation
  // and one rounding, so each value is within a bf16 half-ulp (2^-9 relative) of the fp32 formula.
  at::manual_seed(11);
  auto bf = [](const at::Tensor& t) { return t.to(at::kBFloat16); };
  auto within = [](const at::Tensor& got, const at::Tensor& ref) {
    return ((got.to(at::kFloat) - ref).abs() - ref.abs() * (1.0 / 256) - 1e-6).max().item<double>() <= 0;
  };
  at::Tensor x = bf(at::randn({2, 6, 16}) * 3 + 1), w = bf(at::randn({16})), b = bf(at::randn({16}));
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor ref = (xf - xf.mean(-1, true)) / at::sqrt(xf.var(-1, false, true) + 1e-6) * w.to(at::kFloat) + b.to(at::kFloat);
  at::Tensor got = nn::layer_norm(x, w, b, 1e-6);
  EXPECT_EQ(got.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(within(got, ref));
  at::Tensor img = bf(at::randn({2, 8, 5, 5}) * 2), gw = bf(at::randn({8})), gb = bf(at::randn({8}));
  at::Tensor gf = img.to(at::kFloat).view({2, 4, -1});
  at::Tensor gref = ((gf - gf.mean(-1, true)) / at::sqrt(gf.var(-1, false, true) + 1e-6)).view({2, 8, 5, 5}) *
                        gw.to(at::kFloat).view({1, 8, 1, 1}) + gb.to(at::kFloat).view({1, 8, 1, 1});
  at::Tensor ggot = nn::group_norm(img, 4, gw, gb, 1e-6);
  EXPECT_EQ(ggot.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(within(ggot, gref));
}

TEST(Activations, MatchFormulas) {
  at::Tensor x = at::linspace(-4, 4, 33);
  at::Tensor xd = x.to(at::kDouble);
  auto close = [](const at::Tensor& a, const at::Tensor& b) { return (a.to(at::kDouble) - b).abs().max().item<double>(); };
  EXPECT_LT(close(nn::quick_gelu(x), xd / (1 + (-1.702 * xd).exp())), 1e-6);
  EXPECT_LT(close(nn::gelu(x), 0.5 * xd * (1 + (xd / std::sqrt(2.0)).erf())), 1e-6);
  EXPECT_LT(close(nn::gelu_tanh(x), 0.5 * xd * (1 + (std::sqrt(2.0 / M_PI) * (xd + 0.044715 * xd.pow(3))).tanh())), 1e-6);
  EXPECT_LT(close(nn::silu(x), xd / (1 + (-xd).exp())), 1e-6);
}

TEST(Rotary, HalfAndInterleavedMatchComplexRotation) {
  at::manual_seed(5);
  const int64_t L = 6, D = 8;
  at::Tensor inv = nn::rope_inv_freq(D, 10000.0);
  EXPECT_NEAR(inv[1].item<double>(), std::pow(10000.0, -2.0 / D), 1e-7);
  at::Tensor pos = at::arange(L, at::kLong);
  auto [cos, sin] = nn::rope_cos_sin(pos, inv);
  at::Tensor x = at::randn({1, 1, L, D});
  // rotate-half: pair (x[i], x[i + D/2]) rotates by angle pos * inv[i].
  at::Tensor got = nn::apply_rope_half(x, cos, sin);
  for (int64_t p = 0; p < L; ++p)
    for (int64_t i = 0; i < D / 2; ++i) {
      const double a = p * inv[i].item<double>();
      const double x0 = x[0][0][p][i].item<double>(), x1 = x[0][0][p][i + D / 2].item<double>();
      EXPECT_NEAR(got[0][0][p][i].item<double>(), x0 * std::cos(a) - x1 * std::sin(a), 1e-5);
      EXPECT_NEAR(got[0][0][p][i + D / 2].item<double>(), x1 * std::cos(a) + x0 * std::sin(a), 1e-5);
    }
  // interleaved: pair (x[2i], x[2i+1]) rotates by angle theta_i.
  at::Tensor ang = pos.to(at::kDouble).unsqueeze(1) * inv.to(at::kDouble).unsqueeze(0);  // [L, D/2]
  at::Tensor c2 = ang.cos().repeat_interleave(2, 1).to(at::kFloat), s2 = ang.sin().repeat_interleave(2, 1).to(at::kFloat);
  at::Tensor gi = nn::apply_rope_interleaved(x, c2, s2);
  for (int64_t p = 0; p < L; ++p)
    for (int64_t i = 0; i < D / 2; ++i) {
      const double a = ang[p][i].item<double>();
      const double x0 = x[0][0][p][2 * i].item<double>(), x1 = x[0][0][p][2 * i + 1].item<double>();
      EXPECT_NEAR(gi[0][0][p][2 * i].item<double>(), x0 * std::cos(a) - x1 * std::sin(a), 1e-5);
      EXPECT_NEAR(gi[0][0][p][2 * i + 1].item<double>(), x1 * std::cos(a) + x0 * std::sin(a), 1e-5);
    }
}

TEST(Debug, TapReachesTheInstalledHookOnly) {
  int calls = 0;
  tap("before", at::ones({1}));
  {
    DebugScope scope([&](const std::string& name, const at::Tensor&) { calls += name == "x" ? 1 : 100; });
    EXPECT_TRUE(tapping());
    tap("x", at::ones({1}));
  }
  EXPECT_FALSE(tapping());
  tap("x", at::ones({1}));
  EXPECT_EQ(calls, 1);
}

// A tensor-parallel split of a Linear: the row parts concatenate to the whole output, the column
// parts sum to it; quantised codes keep their scales (rows: sliced with them, columns: whole).
TEST(LinearSlice, RowsConcatenateAndColumnsSum) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({5, 8});
  omniflux::nn::Linear plain;
  plain.weight = at::randn({6, 8});
  plain.bias = at::randn({6});
  const at::Tensor whole = plain(x);
  EXPECT_TRUE(at::allclose(at::cat({plain.slice(0, 0, 2)(x), plain.slice(0, 2, 4)(x)}, -1), whole, 1e-6, 1e-6));
  EXPECT_THROW(plain.slice(1, 0, 4), omniflux::Error);  // the bias would be added on every rank
  omniflux::nn::Linear nobias = plain;
  nobias.bias = at::Tensor();
  EXPECT_TRUE(at::allclose(nobias.slice(1, 0, 3)(x.slice(-1, 0, 3)) + nobias.slice(1, 3, 5)(x.slice(-1, 3)),
                           nobias(x), 1e-5, 1e-5));
  const auto q = omniflux::quantize_weight(nobias.weight, omniflux::WeightFormat::Int8);
  omniflux::nn::Linear quant;
  quant.weight = q.codes;
  quant.weight_scale = q.scale;
  const at::Tensor qwhole = quant(x);
  EXPECT_TRUE(at::allclose(at::cat({quant.slice(0, 0, 4)(x), quant.slice(0, 4, 2)(x)}, -1), qwhole, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(quant.slice(1, 0, 5)(x.slice(-1, 0, 5)) + quant.slice(1, 5, 3)(x.slice(-1, 5)), qwhole, 1e-4, 1e-4));
  EXPECT_THROW(plain.slice(2, 0, 1), omniflux::Error);
}
