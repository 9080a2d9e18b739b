// LM bench cases: prefill and decode tokens/s of a Qwen2 decoder with random weights, at batch 1
// and 2 (or batch=N). Shape args: preset=small|qwen2.5-7b, then any of hidden=, layers=, heads=,
// kv_heads=, inter=, vocab=, head_dim= override it; prompt= (prefill tokens), new= (decode tokens).
#include <memory>

#include <ATen/ATen.h>

#include "bench.h"
#include "omniflux/error.h"
#include "omniflux/models/qwen2.h"
#include "sampling/decode_graph.h"
#include "sampling/token_sampler.h"

using namespace omniflux;

namespace {

Qwen2Config lm_config(const bench::BenchContext& ctx) {
  const std::string preset = ctx.arg("preset", "small");
  Qwen2Config c;
  if (preset == "qwen2.5-7b") {
    c = Qwen2Config::qwen2_5_7b();
  } else if (preset == "small") {
    c.vocab_size = 4096;
    c.hidden_size = 256;
    c.intermediate_size = 704;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.rope_theta = 1e6;
  } else {
    throw Error("unknown LM preset", "bench preset=", "small or qwen2.5-7b", preset);
  }
  c.hidden_size = ctx.arg_int("hidden", c.hidden_size);
  c.num_hidden_layers = ctx.arg_int("layers", c.num_hidden_layers);
  c.num_attention_heads = ctx.arg_int("heads", c.num_attention_heads);
  c.num_key_value_heads = ctx.arg_int("kv_heads", c.num_key_value_heads);
  c.intermediate_size = ctx.arg_int("inter", c.intermediate_size);
  c.vocab_size = ctx.arg_int("vocab", c.vocab_size);
  c.head_dim = ctx.arg_int("head_dim", c.hidden_size / c.num_attention_heads);
  return c;
}

nlohmann::json shape_of(const Qwen2Config& c, int64_t batch, int64_t prompt, int64_t n_new) {
  return {{"hidden", c.hidden_size}, {"layers", c.num_hidden_layers}, {"heads", c.num_attention_heads},
          {"kv_heads", c.num_key_value_heads}, {"inter", c.intermediate_size}, {"vocab", c.vocab_size},
          {"batch", batch}, {"prompt", prompt}, {"new", n_new}};
}

std::vector<int64_t> batches(const bench::BenchContext& ctx) {
  if (ctx.args.count("batch")) return {ctx.arg_int("batch", 1)};
  return {1, 2};
}

double weight_bytes(const Qwen2Config& c, at::ScalarType dt) {
  const double H = c.hidden_size, I = c.intermediate_size, q = c.num_attention_heads * c.head_dim,
               kv = c.num_key_value_heads * c.head_dim;
  const double per_layer = H * (q + 2 * kv) + q * H + 3 * H * I;
  // What one decode step reads: the layers and lm_head (the embedding is only gathered).
  return (c.num_hidden_layers * per_layer + c.vocab_size * H) * c10::elementSize(dt);
}

}  // namespace

OMNIFLUX_BENCH_CASE(lm_prefill, "Qwen2 prefill tokens/s; args: preset=small|qwen2.5-7b hidden= layers= heads= kv_heads= inter= vocab= prompt=128 batch=") {
  const Qwen2Config c = lm_config(ctx);
  const int64_t prompt = ctx.arg_int("prompt", 128);
  auto lm = Qwen2ForCausalLM::random(c, ctx.rt, 0);
  for (int64_t B : batches(ctx)) {
    at::Tensor ids = at::randint(0, c.vocab_size, {B, prompt}, at::TensorOptions().dtype(at::kLong).device(ctx.rt.torch_device()));
    auto cache = lm.new_cache(B, prompt);
    const double ms = ctx.time_ms([&] {
      cache.reset();
      (void)lm.prefill(ids, cache);
    });
    ctx.report({{"shape", shape_of(c, B, prompt, 0)}, {"metric", "prefill"}, {"ms", ms},
                {"value", B * prompt * 1000.0 / ms}, {"unit", "tok/s"}});
  }
}

OMNIFLUX_BENCH_CASE(lm_decode, "Qwen2 greedy decode tokens/s through the static KV cache; args: as lm_prefill, plus new=32 bw_gbs= (GPU bandwidth, GB/s: the bound)") {
  const Qwen2Config c = lm_config(ctx);
  const int64_t prompt = ctx.arg_int("prompt", 128), n_new = ctx.arg_int("new", 32);
  auto lm = Qwen2ForCausalLM::random(c, ctx.rt, 0);
  for (int64_t B : batches(ctx)) {
    at::Tensor ids = at::randint(0, c.vocab_size, {B, prompt}, at::TensorOptions().dtype(at::kLong).device(ctx.rt.torch_device()));
    auto cache = lm.new_cache(B, prompt + n_new);
    at::Tensor first = lm.prefill(ids, cache).squeeze(1).argmax(-1);
    const int64_t len0 = cache.length();
    // --decode-graphs: the same greedy steps through a decode graph (sampling/decode_graph.h). The
    // warm-up run captures it; the timed runs rewind into the same bucket and only replay.
    std::unique_ptr<sampling::TokenSampler> sampler;
    std::unique_ptr<sampling::DecodeGraph> graph;
    if (ctx.rt.decode_graphs) {
      if (prompt + n_new > kDecodeGraphBucket)
        throw Error("decode graphs are timed within one bucket", "bench lm_decode",
                    "prompt + new <= " + std::to_string(kDecodeGraphBucket), std::to_string(prompt + n_new));
      sampling::SamplerSpec spec;
      spec.rows = B;
      spec.vocab = c.vocab_size;
      spec.max_new_tokens = n_new;
      sampler = std::make_unique<sampling::TokenSampler>(spec, at::Tensor(), first.device());
      graph = std::make_unique<sampling::DecodeGraph>(*sampling::decode_graph_cache(cache, ctx.rt),
                                                      [&](const at::Tensor& t) { return lm.decode_one(t, cache); }, *sampler);
    }
    const double ms = ctx.time_ms([&] {
      cache.rewind(len0);
      at::Tensor next = first;
      for (int64_t i = 0; i < n_new; ++i) next = graph ? graph->run(next) : lm.decode_one(next, cache).argmax(-1);  // no host read
    });
    const double steps_per_s = n_new * 1000.0 / ms;
    nlohmann::json line = {{"shape", shape_of(c, B, prompt, n_new)}, {"metric", graph ? "decode_graph" : "decode"}, {"ms_per_step", ms / n_new},
                           {"value", steps_per_s * B}, {"unit", "tok/s"}, {"steps_per_s", steps_per_s}};
    // The weight-bandwidth bound at the GPU's bandwidth (bw_gbs=, GB/s; scripts/device-check.sh reads it
    // from the GPU's name): every decode step reads every weight once.
    const double bw_gbs = ctx.arg_double("bw_gbs", 0.0);
    if (ctx.rt.torch_device().is_cuda() && bw_gbs > 0)
      line["bandwidth_bound_steps_per_s"] = bw_gbs * 1e9 / weight_bytes(c, ctx.rt.compute_dtype());
    ctx.report(line);
  }
}
