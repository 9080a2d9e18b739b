// Qwen2ForCausalLM, after transformers models/qwen2/modeling_qwen2.py (4.51).
#include "omniflux/models/qwen2.h"

#include <filesystem>
#include <optional>

#include <ATen/ATen.h>

#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "models/qwen2_layers.h"
#include "nn/debug.h"
#include "nn/ops.h"
#include "nn/rotary.h"

namespace omniflux {

Qwen2Config Qwen2Config::from_json(const omniflux::Config& root) {
  // Newer transformers nest the text fields of multimodal models under text_config.
  const omniflux::Config json = (!root.has("hidden_size") && root.has("text_config")) ? root.sub("text_config") : root;
  Qwen2Config c;
  c.vocab_size = json.get_size("vocab_size", c.vocab_size);
  c.hidden_size = json.get_size("hidden_size", c.hidden_size);
  c.intermediate_size = json.get_size("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = json.get_int("num_hidden_layers", c.num_hidden_layers, 1, 4096);
  c.num_attention_heads = json.get_int("num_attention_heads", c.num_attention_heads, 1, 4096);
  c.num_key_value_heads = json.get_int("num_key_value_heads", c.num_attention_heads, 1, 4096);
  c.max_position_embeddings = json.get_size("max_position_embeddings", c.max_position_embeddings);
  c.rms_norm_eps = json.get_epsilon("rms_norm_eps", c.rms_norm_eps);
  c.rope_theta = json.get_positive("rope_theta", c.rope_theta);
  c.tie_word_embeddings = json.get_bool("tie_word_embeddings", c.tie_word_embeddings);
  json.check(json.has("head_dim") || c.hidden_size % c.num_attention_heads == 0, "hidden_size",
             "a multiple of num_attention_heads " + std::to_string(c.num_attention_heads), std::to_string(c.hidden_size));
  c.head_dim = json.get_int("head_dim", c.hidden_size / c.num_attention_heads, 2, 4096);
  json.check(c.head_dim % 2 == 0, "head_dim", "an even size (rotary embeddings)", std::to_string(c.head_dim));
  json.check(c.num_attention_heads % c.num_key_value_heads == 0, "num_attention_heads",
             "a multiple of num_key_value_heads " + std::to_string(c.num_key_value_heads),
             std::to_string(c.num_attention_heads));
  if (json.get_bool("use_sliding_window", false))
    throw Error("sliding-window attention is not supported", json.where("use_sliding_window"), "false", "true");
  if (json.has("rope_scaling")) {
    // "mrope" is rewritten to default RoPE by transformers (Qwen2.5-VL); others change the math.
    const omniflux::Config rs = json.sub("rope_scaling");
    const std::string type = rs.get_string("type", rs.get_string("rope_type", "default"));
    if (type != "default" && type != "mrope")
      throw Error("unsupported rope_scaling type", json.where("rope_scaling.type"), "default or mrope", type);
  }
  return c;
}

Qwen2Config Qwen2Config::qwen2_5_7b() {
  Qwen2Config c;
  c.vocab_size = 152064;
  c.hidden_size = 3584;
  c.intermediate_size = 18944;
  c.num_hidden_layers = 28;
  c.num_attention_heads = 28;
  c.num_key_value_heads = 4;
  c.head_dim = 128;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = false;
  return c;
}

namespace qwen2 {

// --- Tensor parallelism -----------------------------------------------------------------------

TensorSplit TensorSplit::of(const Qwen2Config& c, const RuntimeOptions& rt, const std::string& where) {
  TensorSplit s;
  s.group = rt.parallel ? rt.parallel->tensor_group() : nullptr;
  const int64_t P = s.group ? s.group->size() : 1;
  s.rank = s.group ? s.group->rank() : 0;
  s.size = P;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads, I = c.intermediate_size;
  auto need = [&](bool ok, const char* field, int64_t value, const std::string& rule) {
    if (!ok)
      throw Error("tensor parallelism splits the language model's heads and MLP evenly over its ranks",
                  where + ": " + field, std::string(field) + " (" + std::to_string(value) + ") " + rule,
                  std::to_string(P) + " tensor-parallel ranks (--no-tensor-parallel keeps the LM whole on every rank)");
  };
  need(Hq % P == 0, "num_attention_heads", Hq, "divisible by the tensor-parallel ranks");
  need(Hkv % P == 0 || P % Hkv == 0, "num_key_value_heads", Hkv, "divisible by the tensor-parallel ranks, or dividing them");
  need(I % P == 0, "intermediate_size", I, "divisible by the tensor-parallel ranks");
  s.heads = Hq / P;
  s.head_begin = s.rank * s.heads;
  if (Hkv % P == 0) {
    s.kv_heads = Hkv / P;
    s.kv_begin = s.rank * s.kv_heads;
  } else {
    // P / Hkv consecutive ranks share one kv head: their query heads all lie in its group (Hq / Hkv
    // heads), since Hq % P == 0.
    s.kv_heads = 1;
    s.kv_begin = s.rank / (P / Hkv);
  }
  s.inter = I / P;
  s.inter_begin = s.rank * s.inter;
  return s;
}

void check_tensor_parallel(const Qwen2Config& cfg, const RuntimeOptions& rt, const std::string& where) {
  (void)TensorSplit::of(cfg, rt, where);
}

// --- DecoderLayer ---------------------------------------------------------------------------

DecoderLayer DecoderLayer::load(const WeightView& w, const Qwen2Config& cfg) {
  const RuntimeOptions& rt = w.store().runtime();
  const TensorSplit tp = TensorSplit::of(cfg, rt, w.prefix());
  const int64_t H = cfg.hidden_size, D = cfg.head_dim, q = cfg.num_attention_heads * D,
                kv = cfg.num_key_value_heads * D, I = cfg.intermediate_size;
  DecoderLayer l;
  l.heads_ = tp.heads;
  l.kv_heads_ = tp.kv_heads;
  l.head_dim_ = D;
  l.eps_ = cfg.rms_norm_eps;
  l.tp_ = tp.group;
  if (tp.group) l.parallel_ = rt.parallel;
  l.input_norm_ = w.get("input_layernorm.weight", {H});
  l.post_norm_ = w.get("post_attention_layernorm.weight", {H});
  const WeightView a = w.sub("self_attn");
  const WeightView m = w.sub("mlp");
  // Whole tensors through the strict loader (every key used), then this rank's slice. With a
  // device to copy to, the projections load on the host first so that only the slice crosses (the
  // streamed CUDA blocks already build on the host, under BlockStack's own target).
  const bool host_first = tp.group && !rt.torch_device().is_cpu() && rt.offload != Offload::Sequential;
  std::optional<WeightStore::Target> host;
  if (host_first) host.emplace(w.store(), c10::Device(c10::kCPU), /*pinned=*/false);
  nn::Linear qp = nn::Linear::load(a, "q_proj", H, q), kp = nn::Linear::load(a, "k_proj", H, kv),
             vp = nn::Linear::load(a, "v_proj", H, kv), op = nn::Linear::load(a, "o_proj", q, H, /*bias=*/false),
             gp = nn::Linear::load(m, "gate_proj", H, I, false), up = nn::Linear::load(m, "up_proj", H, I, false),
             dp = nn::Linear::load(m, "down_proj", I, H, false);
  if (tp.group) {
    qp = qp.slice(0, tp.head_begin * D, tp.heads * D);
    kp = kp.slice(0, tp.kv_begin * D, tp.kv_heads * D);
    vp = vp.slice(0, tp.kv_begin * D, tp.kv_heads * D);
    op = op.slice(1, tp.head_begin * D, tp.heads * D);
    gp = gp.slice(0, tp.inter_begin, tp.inter);
    up = up.slice(0, tp.inter_begin, tp.inter);
    dp = dp.slice(1, tp.inter_begin, tp.inter);
  }
  if (host) {
    host.reset();
    for (nn::Linear* p : {&qp, &kp, &vp, &op, &gp, &up, &dp}) p->to(rt.torch_device());
  }
  // Fused at load (gpt-fast): one matmul for q|k|v and one for gate|up.
  l.qkv_ = nn::Linear::fuse({qp, kp, vp});
  l.o_ = op;
  l.gate_up_ = nn::Linear::fuse({gp, up});
  l.down_ = dp;
  l.qkv_.prefer_decode_layout(w.store());
  l.gate_up_.prefer_decode_layout(w.store());
  // The fused copies (and slices) replace the mapped parts: give their pages back.
  for (const char* p : {"q_proj.", "k_proj.", "v_proj."}) w.store().drop_pages(a.key(p));
  for (const char* p : {"gate_proj.", "up_proj."}) w.store().drop_pages(m.key(p));
  if (tp.group) {
    w.store().drop_pages(a.key("o_proj."));
    w.store().drop_pages(m.key("down_proj."));
  }
  // rotary_emb.inv_freq is a non-persistent buffer; some third-party files still carry it.
  w.store().ignore_prefix(a.key("rotary_emb."));
  return l;
}

DecoderLayer DecoderLayer::random(const Qwen2Config& cfg, at::TensorOptions o) {
  const int64_t H = cfg.hidden_size, D = cfg.head_dim, q = cfg.num_attention_heads * D,
                kv = cfg.num_key_value_heads * D, I = cfg.intermediate_size;
  DecoderLayer l;
  l.heads_ = cfg.num_attention_heads;
  l.kv_heads_ = cfg.num_key_value_heads;
  l.head_dim_ = D;
  l.eps_ = cfg.rms_norm_eps;
  l.input_norm_ = at::ones({H}, o);
  l.post_norm_ = at::ones({H}, o);
  l.qkv_.weight = nn::cpu_gemv_layout(at::randn({q + 2 * kv, H}, o) * (1.0 / std::sqrt(double(H))));
  l.qkv_.bias = at::randn({q + 2 * kv}, o) * 0.02;
  l.o_.weight = at::randn({H, q}, o) * (1.0 / std::sqrt(double(q)));
  l.gate_up_.weight = nn::cpu_gemv_layout(at::randn({2 * I, H}, o) * (1.0 / std::sqrt(double(H))));
  l.down_.weight = at::randn({H, I}, o) * (1.0 / std::sqrt(double(I)));
  return l;
}

at::Tensor DecoderLayer::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                 nn::KVCache& cache, int64_t layer, const nn::AttentionOptions& attn) const {
  const int64_t B = x.size(0), S = x.size(1), D = head_dim_, q = heads_ * D, kv = kv_heads_ * D;
  at::Tensor h = nn::rms_norm(x, input_norm_, eps_);
  at::Tensor qkv = qkv_(h);  // [B, S, (Hq + 2 Hkv) D]
  // [B, S, H, D] -> [B, H, S, D]
  at::Tensor qs = qkv.slice(-1, 0, q).view({B, S, heads_, D}).transpose(1, 2);
  at::Tensor ks = qkv.slice(-1, q, q + kv).view({B, S, kv_heads_, D}).transpose(1, 2);
  at::Tensor vs = qkv.slice(-1, q + kv).view({B, S, kv_heads_, D}).transpose(1, 2);
  at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // [B, 1, S, D]
  qs = nn::apply_rope_half(qs, c, s);
  ks = nn::apply_rope_half(ks, c, s);
  auto [kc, vc] = cache.write(layer, ks, vs);  // post-RoPE keys, as HF caches them
  at::Tensor o = nn::attention(qs, kc, vc, attn).transpose(1, 2).reshape({B, S, q});
  // Under tensor parallelism o_proj and down_proj give this rank's partial sums: one all-reduce
  // each, before the residual add, so every rank holds the same whole hidden state.
  at::Tensor a = o_(o).contiguous();  // a fresh product: contiguous already, as the all-reduce needs
  if (tp_) tp_->all_reduce_sum(a);
  at::Tensor r = x + a;
  at::Tensor gu = gate_up_(nn::rms_norm(r, post_norm_, eps_));
  const int64_t I = gu.size(-1) / 2;
  at::Tensor mlp = down_(at::silu(gu.slice(-1, 0, I)) * gu.slice(-1, I)).contiguous();
  if (tp_) tp_->all_reduce_sum(mlp);
  return r + mlp;
}

std::shared_ptr<const DecoderStack> DecoderStack::load(const WeightView& base, const Qwen2Config& c,
                                                       const RuntimeOptions& rt) {
  return std::make_shared<const DecoderStack>(DecoderStack{nn::BlockStack<DecoderLayer>::load(
      base, c.num_hidden_layers, [c](const WeightView& w) { return DecoderLayer::load(w, c); }, rt)});
}

}  // namespace qwen2

using qwen2::check_tensor_parallel;
using qwen2::DecoderLayer;
using qwen2::DecoderStack;
using qwen2::TensorSplit;

// --- Qwen2ForCausalLM -----------------------------------------------------------------------

void check_token_ids(const at::Tensor& ids, int64_t vocab_size, const std::string& where) {
  if (!ids.defined() || ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1)
    throw Error("token ids must be a non-empty [B, S] tensor", where, "[B, S]",
                ids.defined() ? shape_str(ids.sizes().vec()) : "undefined");
  if (at::isFloatingType(ids.scalar_type()) || ids.scalar_type() == at::kBool)
    throw Error("token ids must be integers", where, "int64", std::string(c10::toString(ids.scalar_type())));
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= vocab_size)
    throw Error("token id out of range", where, "0 <= id < " + std::to_string(vocab_size),
                std::to_string(lo < 0 ? lo : hi));
}

Qwen2ForCausalLM Qwen2ForCausalLM::load(const std::string& folder, const RuntimeOptions& rt) {
  Qwen2ForCausalLM lm;
  lm.rt_ = rt;
  lm.cfg_ = Qwen2Config::from_json(omniflux::Config::load(folder));
  const Qwen2Config& c = lm.cfg_;
  check_tensor_parallel(c, rt, (std::filesystem::path(folder) / "config.json").string());
  auto store = WeightStore::open(folder, rt);
  const WeightView m = store->root().sub("model");
  lm.embed_tokens_ = m.get("embed_tokens.weight", {c.vocab_size, c.hidden_size});
  lm.layers_ = DecoderStack::load(m.sub("layers"), c, rt);
  lm.norm_ = m.get("norm.weight", {c.hidden_size});
  if (c.tie_word_embeddings) {
    lm.lm_head_ = nn::cpu_gemv_layout(lm.embed_tokens_);  // on the CPU a transposed copy (decode speed)
    store->ignore_prefix("lm_head.");  // transformers ties it over whatever the file holds
  } else {
    lm.lm_head_ = nn::cpu_gemv_layout(store->root().get("lm_head.weight", {c.vocab_size, c.hidden_size}));
    store->drop_pages("lm_head.");  // copied by the layout change on the CPU
  }
  store->ignore_prefix("model.rotary_emb.");
  store->finish();
  lm.inv_freq_ = nn::rope_inv_freq(c.head_dim, c.rope_theta).to(rt.torch_device());
  return lm;
}

Qwen2ForCausalLM Qwen2ForCausalLM::random(const Qwen2Config& c, const RuntimeOptions& rt, uint64_t seed) {
  Qwen2ForCausalLM lm;
  lm.rt_ = rt;
  lm.rt_.parallel.reset();  // random layers are whole (DecoderLayer::random): so is the cache
  lm.cfg_ = c;
  at::manual_seed(seed);
  auto o = at::TensorOptions().dtype(rt.compute_dtype()).device(rt.torch_device());
  lm.embed_tokens_ = at::randn({c.vocab_size, c.hidden_size}, o);
  std::vector<DecoderLayer> layers;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers.push_back(DecoderLayer::random(c, o));
  lm.layers_ = std::make_shared<const DecoderStack>(
      DecoderStack{nn::BlockStack<DecoderLayer>::from_blocks(std::move(layers))});
  lm.norm_ = at::ones({c.hidden_size}, o);
  lm.lm_head_ = nn::cpu_gemv_layout(c.tie_word_embeddings ? lm.embed_tokens_
                                                          : at::randn({c.vocab_size, c.hidden_size}, o) *
                                                                (1.0 / std::sqrt(double(c.hidden_size))));
  lm.inv_freq_ = nn::rope_inv_freq(c.head_dim, c.rope_theta).to(rt.torch_device());
  return lm;
}

nn::KVCache Qwen2ForCausalLM::new_cache(int64_t batch, int64_t capacity) const {
  const int64_t kv_heads = TensorSplit::of(cfg_, rt_, "Qwen2ForCausalLM::new_cache").kv_heads;
  return nn::KVCache(cfg_.num_hidden_layers, batch, kv_heads, capacity, cfg_.head_dim,
                     at::TensorOptions().dtype(rt_.compute_dtype()).device(rt_.torch_device()));
}

at::Tensor Qwen2ForCausalLM::embed(const at::Tensor& ids) const { return at::embedding(embed_tokens_, ids); }

at::Tensor Qwen2ForCausalLM::lm_head(const at::Tensor& h) const { return nn::linear(h, lm_head_); }

at::Tensor Qwen2ForCausalLM::hidden_states(const at::Tensor& ids, nn::KVCache& cache,
                                           const at::Tensor& attention_mask) const {
  nn::AttentionOptions attn = cache.begin_step(ids.size(1), attention_mask);
  auto [cos, sin] = nn::rope_cos_sin(cache.positions(), inv_freq_);  // [B, S, D] fp32
  at::Tensor x = embed(ids.to(embed_tokens_.device()));
  layers_->layers.run([&](const DecoderLayer& layer, int64_t i) {
    x = layer.forward(x, cos, sin, cache, i, attn);
    if (tapping()) tap("qwen2.layer_output", x);
  });
  cache.end_step();
  return nn::rms_norm(x, norm_, cfg_.rms_norm_eps);
}

at::Tensor Qwen2ForCausalLM::prefill(const at::Tensor& ids, nn::KVCache& cache, const at::Tensor& attention_mask,
                                     int64_t logits_to_keep) const {
  check_token_ids(ids, cfg_.vocab_size, "Qwen2ForCausalLM::prefill");
  if (ids.size(0) != cache.batch())
    throw Error("batch size differs from the cache's", "Qwen2ForCausalLM::prefill", std::to_string(cache.batch()),
                std::to_string(ids.size(0)));
  at::Tensor h = hidden_states(ids, cache, attention_mask);
  const int64_t S = h.size(1);
  if (logits_to_keep > 0 && logits_to_keep < S) h = h.slice(1, S - logits_to_keep);
  return lm_head(h);
}

at::Tensor Qwen2ForCausalLM::decode_one(const at::Tensor& ids, nn::KVCache& cache) const {
  if (ids.dim() != 1 || ids.size(0) != cache.batch())
    throw Error("decode_one takes one token per row", "Qwen2ForCausalLM::decode_one",
                "[" + std::to_string(cache.batch()) + "]", shape_str(ids.sizes().vec()));
  // No host check of the ids here: they come from the sampler on the device.
  return lm_head(hidden_states(ids.unsqueeze(1), cache)).squeeze(1);
}

at::Tensor Qwen2ForCausalLM::forward(const at::Tensor& ids) const {
  check_token_ids(ids, cfg_.vocab_size, "Qwen2ForCausalLM::forward");
  nn::KVCache cache = new_cache(ids.size(0), ids.size(1));
  return prefill(ids, cache, {}, 0);
}

}  // namespace omniflux
