// T5 encoder, after transformers modeling_t5.py (T5EncoderModel, T5Block, T5LayerSelfAttention,
// T5Attention, T5LayerFF, T5DenseGatedActDense, T5LayerNorm).
#include "omniflux/models/t5_encoder.h"

#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/attention.h"
#include "nn/debug.h"
#include "nn/layers.h"
#include "nn/ops.h"

namespace omniflux {

T5Config T5Config::from_config(const Config& c) {
  T5Config f;
  f.vocab_size = c.get_size("vocab_size", f.vocab_size);
  f.d_model = c.get_size("d_model", f.d_model);
  f.d_kv = c.get_int("d_kv", f.d_kv, 1, 4096);
  f.d_ff = c.get_size("d_ff", f.d_ff);
  f.num_layers = c.get_int("num_layers", f.num_layers, 1, 4096);
  f.num_heads = c.get_int("num_heads", f.num_heads, 1, 4096);
  f.relative_attention_num_buckets = c.get_int("relative_attention_num_buckets", f.relative_attention_num_buckets, 4, 1 << 16);
  f.relative_attention_max_distance = c.get_int("relative_attention_max_distance", f.relative_attention_max_distance, 1, 1 << 20);
  f.layer_norm_epsilon = c.get_epsilon("layer_norm_epsilon", f.layer_norm_epsilon);
  const std::string ff = c.get_string("feed_forward_proj", "relu");
  if (ff == "gated-gelu") f.gated_gelu = true;
  else if (ff != "relu")
    throw Error("unsupported feed_forward_proj", c.where("feed_forward_proj"), "gated-gelu or relu", ff);
  c.check(f.relative_attention_max_distance > f.relative_attention_num_buckets / 4, "relative_attention_max_distance",
          "> relative_attention_num_buckets / 4 = " + std::to_string(f.relative_attention_num_buckets / 4),
          std::to_string(f.relative_attention_max_distance));
  return f;
}

at::Tensor t5_relative_position_bucket(const at::Tensor& relative_position, bool bidirectional, int64_t num_buckets,
                                       int64_t max_distance) {
  at::Tensor rel = relative_position.to(at::kLong);
  at::Tensor buckets = at::zeros_like(rel);
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + (rel > 0).to(at::kLong) * num_buckets;
    rel = rel.abs();
  } else {
    rel = -at::min(rel, at::zeros_like(rel));
  }
  const int64_t max_exact = num_buckets / 2;
  at::Tensor is_small = rel < max_exact;
  // Same float32 ops as the reference: |rel| = 16, 32, 64 land exactly on bucket boundaries.
  at::Tensor large = (at::log(rel.to(at::kFloat) / static_cast<double>(max_exact)) /
                      std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
                      static_cast<double>(num_buckets - max_exact))
                         .to(at::kLong) +
                     max_exact;
  large = at::clamp_max(large, num_buckets - 1);
  return buckets + at::where(is_small, rel, large);
}

namespace {

struct Block {
  int64_t heads;
  double eps;
  at::Tensor ln0, ln1;    // layer.0 / layer.1 layer_norm
  nn::Linear qkv, o;      // layer.0 SelfAttention.{q,k,v} fused, o (no biases)
  nn::Linear wi, wo;      // layer.1 DenseReluDense: wi (or wi_0|wi_1 fused when gated), wo
  bool gated;
  Block(const WeightView& w, const T5Config& c, c10::ScalarType wo_dtype)
      : heads(c.num_heads), eps(c.layer_norm_epsilon), gated(c.gated_gelu) {
    const int64_t inner = c.num_heads * c.d_kv, d = c.d_model;
    WeightView a = w.sub("layer.0"), f = w.sub("layer.1");
    ln0 = a.get("layer_norm.weight", {d});
    qkv = nn::Linear::fuse({nn::Linear::load(a, "SelfAttention.q", d, inner, false),
                            nn::Linear::load(a, "SelfAttention.k", d, inner, false),
                            nn::Linear::load(a, "SelfAttention.v", d, inner, false)});
    o = nn::Linear::load(a, "SelfAttention.o", inner, d, false);
    ln1 = f.get("layer_norm.weight", {d});
    wi = gated ? nn::Linear::fuse({nn::Linear::load(f, "DenseReluDense.wi_0", d, c.d_ff, false),
                                   nn::Linear::load(f, "DenseReluDense.wi_1", d, c.d_ff, false)})
               : nn::Linear::load(f, "DenseReluDense.wi", d, c.d_ff, false);
    wo = nn::Linear::load(f, "DenseReluDense.wo", c.d_ff, d, false, wo_dtype);
  }

  // T5LayerNorm: normalised in fp32, cast to the weight dtype, then * weight.
  at::Tensor norm(const at::Tensor& x, const at::Tensor& w) const {
    return nn::rms_norm(x.to(at::kFloat), {}, eps).to(w.scalar_type()) * w;
  }

  // bias [1, H, L, L] additive; no 1/sqrt(d_kv) scaling.
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& bias) const {
    auto split = [&](const at::Tensor& t) { return t.unflatten(-1, {heads, -1}).transpose(1, 2); };
    at::Tensor n = norm(x, ln0);
    nn::AttentionOptions opt;
    opt.scale = 1.0;
    opt.mask = bias;
    auto p = qkv(n).chunk(3, -1);
    at::Tensor a = nn::attention(split(p[0]), split(p[1]), split(p[2]), opt);
    at::Tensor h = x + o(a.transpose(1, 2).flatten(2));
    n = norm(h, ln1);
    at::Tensor u = wi(n);
    at::Tensor g;
    if (gated) {
      auto gu = u.chunk(2, -1);
      g = nn::gelu_tanh(gu[0]) * gu[1];
    } else {
      g = at::relu(u);
    }
    // transformers casts the FF hidden state to wo's dtype (fp32, _keep_in_fp32_modules); a
    // quantised wo dequantises to it.
    return h + wo(g.to(at::kFloat));
  }
};

}  // namespace

struct T5Encoder::Impl {
  T5Config cfg;
  c10::ScalarType dtype;
  at::Tensor shared, relative_attention_bias, final_layer_norm;
  std::vector<Block> blocks;
  Impl(const T5Config& c, const WeightView& w) : cfg(c) {
    shared = w.get("shared.weight", {c.vocab_size, c.d_model});
    dtype = shared.scalar_type();
    // encoder.embed_tokens is tied to shared; a checkpoint that stores it holds the same values.
    if (w.contains("encoder.embed_tokens.weight")) w.store().mark_used(w.key("encoder.embed_tokens.weight"));
    const c10::ScalarType wo_dtype = at::kFloat;  // kept fp32 in half precision (_keep_in_fp32_modules)
    WeightView enc = w.sub("encoder");
    relative_attention_bias =
        enc.get("block.0.layer.0.SelfAttention.relative_attention_bias.weight", {c.relative_attention_num_buckets, c.num_heads});
    for (int64_t i = 0; i < c.num_layers; ++i) blocks.emplace_back(enc.sub("block").sub(i), c, wo_dtype);
    final_layer_norm = enc.get("final_layer_norm.weight", {c.d_model});
  }
};

T5Encoder::T5Encoder(const T5Config& cfg, const WeightView& w) : impl_(std::make_shared<Impl>(cfg, w)) {}

T5Encoder T5Encoder::load(const std::string& folder, const RuntimeOptions& rt) {
  T5Config cfg = T5Config::from_config(Config::load(folder));
  auto store = WeightStore::open(folder, rt);
  // A full T5ForConditionalGeneration checkpoint: T5EncoderModel ignores the decoder side.
  store->ignore_prefix("decoder.");
  store->ignore_prefix("lm_head.");
  T5Encoder model(cfg, store->root());
  store->finish();
  return model;
}

const T5Config& T5Encoder::config() const { return impl_->cfg; }

at::Tensor T5Encoder::forward(const at::Tensor& input_ids) const {
  const Impl& m = *impl_;
  const T5Config& c = m.cfg;
  if (input_ids.dim() != 2 || input_ids.size(1) < 1 || at::isFloatingType(input_ids.scalar_type()))
    throw Error("input_ids must be integer [B, L]", "T5Encoder.forward", "[B, L]", shape_str(input_ids.sizes().vec()));
  at::Tensor ids = input_ids.to(at::kLong);
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c.vocab_size)
    throw Error("token id out of range", "T5Encoder.forward", "0 <= id < " + std::to_string(c.vocab_size),
                std::to_string(ids.min().item<int64_t>()) + ".." + std::to_string(ids.max().item<int64_t>()));
  const auto dev = m.shared.device();
  const int64_t l = ids.size(1);
  at::Tensor h = at::embedding(m.shared, ids.to(dev));
  tap("t5.embeddings", h);
  // Position bias of block 0, shared by every block: [1, H, L, L] for rel = key - query.
  at::Tensor pos = at::arange(l, at::TensorOptions().dtype(at::kLong).device(dev));
  at::Tensor bucket = t5_relative_position_bucket(pos.unsqueeze(0) - pos.unsqueeze(1), true,
                                                  c.relative_attention_num_buckets, c.relative_attention_max_distance);
  tap("t5.relative_position_bucket", bucket);
  at::Tensor bias = at::embedding(m.relative_attention_bias, bucket).permute({2, 0, 1}).unsqueeze(0);
  tap("t5.position_bias", bias);
  // Residual stream in wo's dtype (fp32 under half precision, as transformers ends up).
  h = h.to(m.blocks.empty() ? m.dtype : at::kFloat);
  for (const auto& b : m.blocks) {
    h = b(h, bias.to(m.dtype));
    tap("t5.block", h);
  }
  return nn::rms_norm(h.to(at::kFloat), {}, c.layer_norm_epsilon).to(m.dtype) * m.final_layer_norm;
}

}  // namespace omniflux
