// Decode graphs (RuntimeOptions::decode_graphs, docs/gpu.md §Decode graphs) on the CPU: the
// fixed-shape step replayed with the cache's host side frozen at capture must give the tokens of
// ordinary decoding, token for token, across bucket edges; a step that reads a host value that
// changes per token must fail that comparison (so the comparison checks capturability); and the
// grouped-query fold the fixed-shape attention uses equals attention with repeated k/v.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/models/qwen2.h"
#include "omniflux/models/qwen2_5_vl.h"
#include "omniflux/models/xomni_lm.h"
#include "nn/attention.h"
#include "nn/kv_cache.h"
#include "sampling/decode_graph.h"
#include "sampling/token_sampler.h"
#include "test_util.h"

using namespace omniflux;

namespace {

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

struct Decoded {
  at::Tensor tokens, logits;
};

// The tiny Qwen2 LM through sampling::generate: eager over growing views, or as a decode graph
// over fixed-shape views of `bucket` keys.
Decoded qwen2_decode(const Qwen2ForCausalLM& lm, const at::Tensor& ids, const at::Tensor& mask,
                     sampling::TokenLoopOptions g, int64_t bucket) {
  auto cache = lm.new_cache(ids.size(0), ids.size(1) + g.max_new_tokens);
  at::Tensor first = lm.prefill(ids, cache, mask).squeeze(1);
  if (bucket) cache.use_fixed_shapes(bucket);
  g.keep_step_logits = true;
  auto r = sampling::generate(first, [&](const at::Tensor& next) { return lm.decode_one(next, cache); }, g,
                              ids.slice(0, 0, g.guidance_scale != 1.0 ? 1 : ids.size(0)), bucket ? &cache : nullptr);
  return {r.tokens, r.step_logits};
}

}  // namespace

TEST(DecodeGraph, GraphDecodingEqualsEagerDecodingTokenForToken) {
  // Greedy, seeded sampling with a repetition penalty, and a left-padded CFG pair; buckets of 8
  // over a 40-token cache: views of 16, 24, 32 and the capacity cap (40 keys).
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"));
  at::manual_seed(5);
  const at::Tensor a = at::randint(0, 512, {1, 11}, at::kLong), b = at::randint(0, 512, {1, 4}, at::kLong);
  at::Tensor pair_mask = at::ones({2, 11}, at::kLong);
  pair_mask[1].slice(0, 0, 7).zero_();
  const at::Tensor pair = at::cat({a, at::cat({at::zeros({1, 7}, at::kLong), b}, 1)});
  for (int mode = 0; mode < 3; ++mode) {
    SCOPED_TRACE(mode == 0 ? "greedy" : mode == 1 ? "sampled, repetition penalty" : "CFG pair, sampled");
    sampling::TokenLoopOptions g;
    g.max_new_tokens = 29;
    if (mode >= 1) {
      g.sampling.do_sample = true;
      g.sampling.seed = 77;
      g.sampling.top_k = 20;
      g.sampling.min_p = 0.02;
      g.sampling.temperature = 10;  // the tiny model's logits are peaked (31 against 23)
    }
    if (mode == 1) g.sampling.repetition_penalty = 3.0;
    if (mode == 2) g.guidance_scale = 2.5;
    const at::Tensor ids = mode == 2 ? pair : a, mask = mode == 2 ? pair_mask : at::Tensor();
    const Decoded eager = qwen2_decode(lm, ids, mask, g, 0), graph = qwen2_decode(lm, ids, mask, g, 8);
    ASSERT_EQ(eager.tokens.sizes(), graph.tokens.sizes());
    EXPECT_TRUE(at::equal(eager.tokens, graph.tokens)) << eager.tokens << graph.tokens;
    EXPECT_LT(max_abs(eager.logits, graph.logits), 1e-4);
    if (mode == 1) EXPECT_GT(std::set<int64_t>(eager.tokens.data_ptr<int64_t>(), eager.tokens.data_ptr<int64_t>() + 29).size(), 3u);
  }
}

TEST(DecodeGraph, CapturesOncePerBucketAndReplaysTheRest) {
  // 12 prompt tokens, 20 steps, buckets of 8, capacity 40: the steps view 16 (4 steps), 24 (8),
  // 32 (8) keys. Each bucket's first step runs eagerly, its second is captured, and all but the
  // first are replays.
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"));
  auto cache = lm.new_cache(1, 40);
  at::Tensor first = lm.prefill(at::arange(1, 13, at::kLong).unsqueeze(0), cache).squeeze(1);
  cache.use_fixed_shapes(8);
  sampling::SamplerSpec spec;
  spec.vocab = first.size(1);
  spec.max_new_tokens = 30;
  sampling::TokenSampler sampler(spec, {}, first.device());
  sampling::DecodeGraph graph(cache, [&](const at::Tensor& ids) { return lm.decode_one(ids, cache); }, sampler);
  at::Tensor next = sampler.sample(first);
  for (int i = 0; i < 20; ++i) next = graph.run(next);
  EXPECT_EQ(cache.length(), 32);
  EXPECT_EQ(graph.captures(), 3);
  EXPECT_EQ(graph.replays(), 20 - 3);
  EXPECT_THROW(graph.run(at::cat({next, next})), Error);  // one id per row
  for (int i = 0; i < 8; ++i) next = graph.run(next);    // up to the capacity: views of 40 keys
  EXPECT_EQ(cache.length(), 40);
  EXPECT_EQ(graph.captures(), 4);
  EXPECT_THROW(graph.run(next), Error);                  // full: refused before anything runs
  EXPECT_EQ(cache.length(), 40);
  nn::KVCache growing = lm.new_cache(1, 8);
  EXPECT_THROW(sampling::DecodeGraph(growing, [](const at::Tensor& t) { return t; }, sampler), Error);
}

TEST(DecodeGraph, AStepThatReadsAHostCounterFailsTheComparison) {
  // Two fake models over a real cache, whose logits pick token (position mod 8): one takes the
  // position from the device (KVCache::positions in fixed shapes), the other from the cache's host
  // length. A CUDA graph would replay the second with the length it had at capture; the CPU's
  // replay does the same, so its tokens must differ from eager decoding there, and not for the first.
  constexpr int64_t V = 8;
  auto run = [&](bool host_counter, bool graph) {
    nn::KVCache cache(1, 1, 1, 64, 8, at::kFloat);
    cache.use_fixed_shapes(16);
    auto one_hot = [](const at::Tensor& pos) { return at::one_hot(pos.remainder(V), V).to(at::kFloat).view({1, V}) * 5; };
    auto step = [&](const at::Tensor&) {
      (void)cache.begin_step(1);
      at::Tensor pos = host_counter ? at::full({1}, cache.length(), at::kLong) : cache.positions().view({1});
      const at::Tensor k = at::zeros({1, 1, 1, 8});
      (void)cache.write(0, k, k);
      cache.end_step();
      return one_hot(pos);
    };
    sampling::TokenLoopOptions g;
    g.max_new_tokens = 12;
    return sampling::generate(one_hot(at::full({1}, -1, at::kLong)), step, g, {}, graph ? &cache : nullptr).tokens;
  };
  const at::Tensor expected = (at::arange(12, at::kLong) - 1).remainder(V).unsqueeze(0);  // 7, 0, 1, ...
  EXPECT_TRUE(at::equal(run(false, false), expected));
  EXPECT_TRUE(at::equal(run(false, true), expected));
  EXPECT_TRUE(at::equal(run(true, false), expected));
  EXPECT_FALSE(at::equal(run(true, true), expected)) << "the replay did not freeze the host side";
}

TEST(DecodeGraph, RuntimeOptionRunsTheModelsAndThePipelinesLoopsAsGraphs) {
  // X-Omni image codes with CFG against a negative prompt of another length (a padded pair), and
  // Qwen2.5-VL generation: decode_graphs on gives the same ids as off.
  RuntimeOptions rt;
  rt.decode_graphs = true;
  auto x0 = XOmniLM::load(fixture("xomni_lm")), x1 = XOmniLM::load(fixture("xomni_lm"), rt);
  at::Tensor prompt = at::arange(1, 11, at::kLong).unsqueeze(0), neg = at::arange(8, 11, at::kLong).unsqueeze(0);
  XOmniLM::ImageGeneration g;
  g.sampling.seed = 1234;
  g.guidance_scale = 3.0;
  EXPECT_TRUE(at::equal(x0.generate_image_codes(prompt, neg, 14, g), x1.generate_image_codes(prompt, neg, 14, g)));
  g.sampling.do_sample = false;
  EXPECT_TRUE(at::equal(x0.generate_image_codes(prompt, neg, 14, g), x1.generate_image_codes(prompt, neg, 14, g)));

  // Decode graphs refuse what a graph cannot replay.
  RuntimeOptions bad = rt;
  bad.offload = Offload::Sequential;
  EXPECT_THROW(bad.validate(), Error);
}

TEST(DecodeGraph, GroupedQueryFoldEqualsRepeatedHeads) {
  // One query per row against a key mask with grouped heads (the fixed-shape decode): the fold
  // into per-key-head queries equals attention with k and v repeated per query head.
  at::manual_seed(3);
  const at::Tensor q = at::randn({2, 6, 1, 16}), k = at::randn({2, 2, 10, 16}), v = at::randn({2, 2, 10, 16});
  at::Tensor mask = at::zeros({2, 1, 1, 10});
  mask[0].select(2, 9).fill_(-1e30);      // a masked tail
  mask[1].slice(2, 0, 3).fill_(-1e30);   // left pads
  nn::AttentionOptions opt;
  opt.mask = mask;
  const at::Tensor got = nn::attention(q, k, v, opt);
  const at::Tensor ref = at::scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), mask);
  EXPECT_LT(max_abs(got, ref), 1e-5);
  EXPECT_EQ(nn::attention_backend(q, k, v, opt).rfind("grouped-queries:", 0), 0u) << nn::attention_backend(q, k, v, opt);
  opt.mask = mask.expand({2, 6, 1, 10}).contiguous();  // a per-head mask folds too
  EXPECT_LT(max_abs(nn::attention(q, k, v, opt), ref), 1e-5);
}

TEST(DecodeGraph, SamplerRefusesLogitsAndSpecsThatDoNotFit) {
  sampling::SamplerSpec spec;
  spec.vocab = 8;
  spec.max_new_tokens = 4;
  sampling::TokenSampler s(spec, {}, at::kCPU);
  EXPECT_THROW(s.sample(at::zeros({1, 9})), Error);    // another vocabulary
  EXPECT_THROW(s.sample(at::zeros({2, 8})), Error);    // another batch
  EXPECT_THROW(s.sample(at::zeros({8})), Error);       // not [B, V]
  EXPECT_THROW(s.sample(at::Tensor()), Error);
  spec.guidance_scale = 3.0;
  sampling::TokenSampler cfg(spec, {}, at::kCPU);
  EXPECT_THROW(cfg.sample(at::zeros({1, 8})), Error);  // CFG needs [2B, V]
  EXPECT_EQ(cfg.sample(at::zeros({2, 8})).sizes(), (std::vector<int64_t>{1}));
  spec.guidance_scale = 1.0;
  auto bad = spec;
  bad.vocab = 0;
  EXPECT_THROW(sampling::TokenSampler(bad, {}, at::kCPU), Error);
  bad = spec;
  bad.token_offset = -1;
  EXPECT_THROW(sampling::TokenSampler(bad, {}, at::kCPU), Error);
  bad = spec;
  bad.logit_bias = {{8, 1.0}};
  EXPECT_THROW(sampling::TokenSampler(bad, {}, at::kCPU), Error);
  bad = spec;
  bad.sampling.repetition_penalty = 1.5;
  EXPECT_THROW(sampling::TokenSampler(bad, at::zeros({2, 3}, at::kLong), at::kCPU), Error);  // prompt rows != B
}
