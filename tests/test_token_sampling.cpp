// Token sampling functions against hand-computed values, the HF processor order, seeded draws and
// the generate loop on scripted logits.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/sampling/token_sampling.h"

using namespace omniflux;
using namespace omniflux::sampling;

namespace {
const float kInf = std::numeric_limits<float>::infinity();

at::Tensor row(std::vector<float> v) { return at::tensor(v, at::kFloat).unsqueeze(0); }

void expect_row(const at::Tensor& got, std::vector<float> want, double tol = 1e-5) {
  ASSERT_EQ(got.dim(), 2);
  ASSERT_EQ(got.size(1), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    const float g = got[0][i].item<float>();
    if (std::isinf(want[i])) EXPECT_EQ(g, want[i]) << "index " << i;
    else EXPECT_NEAR(g, want[i], tol) << "index " << i;
  }
}

at::Tensor logs(std::vector<float> p) { return row(p).log(); }
}  // namespace

TEST(TokenSampling, Temperature) {
  expect_row(apply_temperature(row({1, 2, -3}), 2.0), {0.5f, 1.0f, -1.5f});
  EXPECT_THROW(apply_temperature(row({1}), 0.0), Error);
  EXPECT_THROW(apply_temperature(row({1}), -1.0), Error);
}

TEST(TokenSampling, TopKKeepsTies) {
  expect_row(apply_top_k(row({1, 3, 2, 3, 0}), 2), {-kInf, 3, -kInf, 3, -kInf});
  expect_row(apply_top_k(row({1, 3, 2, 3, 0}), 3), {-kInf, 3, 2, 3, -kInf});
  expect_row(apply_top_k(row({1, 3, 2}), 0), {1, 3, 2});   // off
  expect_row(apply_top_k(row({1, 3, 2}), 10), {1, 3, 2});  // capped at V
}

TEST(TokenSampling, TopP) {
  // probs 0.5 0.3 0.15 0.05; ascending cumsum 0.05 0.2 0.5 1.0; removed where <= 1 - p.
  expect_row(apply_top_p(logs({0.5f, 0.3f, 0.15f, 0.05f}), 0.7), {std::log(0.5f), std::log(0.3f), -kInf, -kInf});
  expect_row(apply_top_p(logs({0.5f, 0.3f, 0.15f, 0.05f}), 0.9),
             {std::log(0.5f), std::log(0.3f), std::log(0.15f), -kInf});
  // Always keeps the most likely token.
  expect_row(apply_top_p(logs({0.5f, 0.3f, 0.2f}), 0.0), {std::log(0.5f), -kInf, -kInf});
  EXPECT_THROW(apply_top_p(row({1}), 1.5), Error);
}

TEST(TokenSampling, MinP) {
  // threshold = min_p * 0.5
  expect_row(apply_min_p(logs({0.5f, 0.3f, 0.15f, 0.05f}), 0.2),
             {std::log(0.5f), std::log(0.3f), std::log(0.15f), -kInf});
  expect_row(apply_min_p(logs({0.5f, 0.3f, 0.15f, 0.05f}), 0.5), {std::log(0.5f), std::log(0.3f), -kInf, -kInf});
  expect_row(apply_min_p(logs({0.25f, 0.25f, 0.5f}), 1.0), {-kInf, -kInf, std::log(0.5f)});
  EXPECT_THROW(apply_min_p(row({1}), -0.1), Error);
}

TEST(TokenSampling, SuppressTokens) {
  expect_row(suppress_tokens(row({1, 2, 3}), {0, 2, 7, -1}), {-kInf, 2, -kInf});
}

TEST(TokenSampling, RepetitionPenalty) {
  // ids 0 and 1 seen (1 twice, penalised once): positive / 2, negative * 2.
  at::Tensor prev = at::tensor({0, 1, 1}, at::kLong).unsqueeze(0);
  expect_row(apply_repetition_penalty(row({2, -2, 1, 0.5}), prev, 2.0), {1, -4, 1, 0.5});
  // Ids outside the scored range are ignored.
  at::Tensor other = at::tensor({-3, 9}, at::kLong).unsqueeze(0);
  expect_row(apply_repetition_penalty(row({2, -2}), other, 2.0), {2, -2});
  EXPECT_THROW(apply_repetition_penalty(row({1}), prev, 0.0), Error);
}

TEST(TokenSampling, CfgCombineRule) {
  // s = log(.5 .25 .25), u = log(.25 .25 .5), g = 3: g(s-u)+u = (ln2, -2ln2, -4ln2).
  const float ln2 = std::log(2.0f);
  at::Tensor cond = logs({0.5f, 0.25f, 0.25f}) + 7.0;  // log_softmax removes any shift
  at::Tensor uncond = logs({0.25f, 0.25f, 0.5f}) - 3.0;
  expect_row(cfg_combine(cond, uncond, 3.0), {ln2, -2 * ln2, -4 * ln2});
  // g = 1 gives the conditional log-probabilities.
  expect_row(cfg_combine(cond, uncond, 1.0), {-ln2, -2 * ln2, -2 * ln2});
  EXPECT_THROW(cfg_combine(row({1, 2}), row({1, 2, 3}), 2.0), Error);
}

TEST(TokenSampling, OrderTemperatureBeforeMinP) {
  // logits (0, -2): p1/p0 = e^-2 = 0.135 < min_p 0.2, so min_p alone drops token 1; after
  // temperature 2 the ratio is e^-1 = 0.37 and it stays (HF: temperature, top-k, top-p, min-p).
  SamplingOptions o;
  o.do_sample = true;
  o.min_p = 0.2;
  o.top_k = 0;
  expect_row(process_scores(row({0, -2}), {}, o), {0, -kInf});
  o.temperature = 2.0;
  expect_row(process_scores(row({0, -2}), {}, o), {0, -1});
}

TEST(TokenSampling, GreedySkipsWarpersButNotProcessors) {
  SamplingOptions o;  // do_sample false
  o.top_k = 1;
  o.temperature = 0.5;
  o.repetition_penalty = 2.0;
  o.suppress_tokens = {2};
  at::Tensor prev = at::tensor({0}, at::kLong).unsqueeze(0);
  expect_row(process_scores(row({4, 3, 5}), prev, o), {2, 3, -kInf});
}

TEST(TokenSampling, SeededDrawsAreReproducibleAndFollowTheDistribution) {
  at::Tensor scores = logs({0.7f, 0.2f, 0.1f}).expand({20000, 3}).contiguous();
  at::Generator g1 = make_generator(1234, at::kCPU), g2 = make_generator(1234, at::kCPU), g3 = make_generator(99, at::kCPU);
  at::Tensor a = sample_categorical(scores, g1), b = sample_categorical(scores, g2), c = sample_categorical(scores, g3);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
  at::Tensor freq = at::bincount(a, {}, 3).to(at::kDouble) / 20000.0;
  EXPECT_NEAR(freq[0].item<double>(), 0.7, 0.015);
  EXPECT_NEAR(freq[1].item<double>(), 0.2, 0.015);
  EXPECT_NEAR(freq[2].item<double>(), 0.1, 0.015);
  // A filtered token is never drawn.
  at::Tensor filtered = row({0, -kInf, 0}).expand({5000, 3}).contiguous();
  EXPECT_EQ(sample_categorical(filtered, g1).eq(1).sum().item<int64_t>(), 0);
}

namespace {
// A scripted "model": at step i row b puts all mass on script[b][i].
struct Scripted {
  std::vector<std::vector<int64_t>> script;
  int64_t V = 6;
  int64_t step = 0;
  std::vector<at::Tensor> fed;
  at::Tensor logits() const {
    at::Tensor l = at::zeros({static_cast<int64_t>(script.size()), V});
    for (size_t b = 0; b < script.size(); ++b) l[b][script[b][std::min<size_t>(step, script[b].size() - 1)]] = 10.0;
    return l;
  }
  at::Tensor operator()(const at::Tensor& ids) {
    fed.push_back(ids.clone());
    ++step;
    return logits();
  }
};
}  // namespace

TEST(TokenSampling, GenerateStopsAtEosAndPads) {
  Scripted m{{{1, 5, 2, 2, 2}, {3, 3, 4, 5, 1}}};
  TokenLoopOptions o;
  o.max_new_tokens = 10;
  o.eos_token_ids = {5};
  o.pad_token_id = 0;
  o.eos_check_every = 1;
  o.keep_step_logits = true;
  auto r = generate(m.logits(), std::ref(m), o);
  at::Tensor want = at::tensor({1, 5, 0, 0, 3, 3, 4, 5}, at::kLong).view({2, 4});
  EXPECT_TRUE(at::equal(r.tokens, want)) << r.tokens;
  EXPECT_EQ(r.step_logits.sizes(), (std::vector<int64_t>{2, 4, 6}));
  // The finished row is fed the pad token.
  EXPECT_EQ(m.fed.back()[0].item<int64_t>(), 0);
}

TEST(TokenSampling, GenerateWithCfgFeedsBothRowsTheSameToken) {
  // cond favours 2, uncond favours 1: with g = 3 guidance pushes further towards 2.
  Scripted m{{{2, 2, 2}, {1, 1, 1}}};
  TokenLoopOptions o;
  o.max_new_tokens = 3;
  o.guidance_scale = 3.0;
  o.token_offset = 100;
  auto r = generate(m.logits(), std::ref(m), o);
  EXPECT_TRUE(at::equal(r.tokens, at::full({1, 3}, 102, at::kLong)));
  ASSERT_EQ(m.fed.size(), 2u);
  EXPECT_TRUE(at::equal(m.fed[0], at::tensor({102, 102}, at::kLong)));
  EXPECT_THROW(generate(at::zeros({3, 6}), std::ref(m), o), Error);  // odd row count with CFG
}

TEST(TokenSampling, GenerateSampledIsReproducibleForASeed) {
  auto run = [](uint64_t seed) {
    int64_t calls = 0;
    at::Tensor base = at::linspace(0, 1, 50).unsqueeze(0);
    auto step = [&](const at::Tensor&) { return base + 0.01 * static_cast<double>(++calls); };
    TokenLoopOptions o;
    o.max_new_tokens = 32;
    o.sampling.do_sample = true;
    o.sampling.top_k = 0;
    o.sampling.seed = seed;
    return generate(base, step, o).tokens;
  };
  EXPECT_TRUE(at::equal(run(7), run(7)));
  EXPECT_FALSE(at::equal(run(7), run(8)));
}

TEST(TokenSampling, BadScoresShape) {
  EXPECT_THROW(apply_top_k(at::zeros({3}), 1), Error);
  EXPECT_THROW(process_scores(at::Tensor(), {}, SamplingOptions{}), Error);
  TokenLoopOptions o;
  o.max_new_tokens = 0;
  EXPECT_THROW(generate(at::zeros({1, 4}), [](const at::Tensor& t) { return t; }, o), Error);
}

TEST(TokenSampling, GenerateSuppressesTokensAndPenalisesRepeats) {
  // Every step favours token 2 (10) over token 4 (9): suppressing 2 gives 4 each time.
  auto step = [](const at::Tensor&) { return row({0, 0, 10, 0, 9, 0}); };
  TokenLoopOptions o;
  o.max_new_tokens = 3;
  o.sampling.suppress_tokens = {2};
  EXPECT_TRUE(at::equal(generate(step(at::Tensor()), step, o).tokens, at::full({1, 3}, 4, at::kLong)));
  // A repetition penalty of 2 on a prompt holding 2: 10 / 2 = 5 < 9, so 4 first; then 4 is
  // penalised too (9 / 2 = 4.5 < 5) and 2 wins.
  o.sampling.suppress_tokens.clear();
  o.sampling.repetition_penalty = 2.0;
  at::Tensor prompt = at::tensor({2}, at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::equal(generate(step(at::Tensor()), step, o, prompt).tokens,
                        at::tensor({4, 2, 2}, at::kLong).unsqueeze(0)));
}

TEST(TokenSampling, OnTokenFalseStopsBeforeTheNextStep) {
  Scripted m{{{1, 2, 3, 4, 5, 1, 2, 3}}};
  TokenLoopOptions o;
  o.max_new_tokens = 8;
  std::vector<int64_t> seen;
  o.on_token = [&](int64_t n) {
    seen.push_back(n);
    return n < 3;
  };
  auto r = generate(m.logits(), std::ref(m), o);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(at::equal(r.tokens, at::tensor({1, 2, 3}, at::kLong).unsqueeze(0))) << r.tokens;
  EXPECT_EQ(m.fed.size(), 2u);  // no model step after the cancel
  // Never cancelling: every token reported, the last one too.
  Scripted full{{{1, 2, 3}}};
  seen.clear();
  o.max_new_tokens = 3;
  o.on_token = [&](int64_t n) {
    seen.push_back(n);
    return true;
  };
  auto all = generate(full.logits(), std::ref(full), o);
  EXPECT_FALSE(all.cancelled);
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2, 3}));
}
