// CLIP text encoder, after transformers modeling_clip.py (CLIPTextTransformer, CLIPEncoderLayer,
// CLIPAttention eager path, CLIPMLP).
#include "omniflux/models/clip_text.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/debug.h"
#include "nn/encoder_layer.h"
#include "nn/layers.h"
#include "nn/ops.h"

namespace omniflux {

ClipTextConfig ClipTextConfig::from_config(const Config& root) {
  const Config c = root.has("text_config") ? root.sub("text_config") : root;
  ClipTextConfig f;
  f.vocab_size = c.get_size("vocab_size", f.vocab_size);
  f.hidden_size = c.get_size("hidden_size", f.hidden_size);
  f.intermediate_size = c.get_size("intermediate_size", f.intermediate_size);
  f.num_hidden_layers = c.get_int("num_hidden_layers", f.num_hidden_layers, 0, 4096);
  f.num_attention_heads = c.get_int("num_attention_heads", f.num_attention_heads, 1, 4096);
  f.max_position_embeddings = c.get_int("max_position_embeddings", f.max_position_embeddings, 2, 1 << 20);
  f.layer_norm_eps = c.get_epsilon("layer_norm_eps", f.layer_norm_eps);
  f.hidden_act = c.get_string("hidden_act", f.hidden_act);
  f.eos_token_id = c.get_int("eos_token_id", f.eos_token_id, 0, f.vocab_size - 1);
  if (f.hidden_act != "quick_gelu" && f.hidden_act != "gelu")
    throw Error("unsupported CLIP activation", c.where("hidden_act"), "quick_gelu or gelu", f.hidden_act);
  c.check(f.hidden_size % f.num_attention_heads == 0, "hidden_size",
          "a multiple of num_attention_heads " + std::to_string(f.num_attention_heads), std::to_string(f.hidden_size));
  return f;
}

namespace {

// encoder.layers.N: the shared pre-LN layer (nn/encoder_layer.h) with q/k/v fused at load.
struct EncoderLayer {
  nn::EncoderLayerWeights w;
  nn::EncoderLayerOptions opt;
  EncoderLayer(const WeightView& v, const ClipTextConfig& c) {
    const int64_t d = c.hidden_size;
    auto lin = [&](const char* name, int64_t out, int64_t in) { return nn::Linear::load(v, name, in, out); };
    auto q = lin("self_attn.q_proj", d, d), k = lin("self_attn.k_proj", d, d), vv = lin("self_attn.v_proj", d, d);
    auto o = lin("self_attn.out_proj", d, d), fc1 = lin("mlp.fc1", c.intermediate_size, d),
         fc2 = lin("mlp.fc2", d, c.intermediate_size);
    auto ln1 = nn::LayerNorm::load(v, "layer_norm1", d, c.layer_norm_eps);
    auto ln2 = nn::LayerNorm::load(v, "layer_norm2", d, c.layer_norm_eps);
    w = {ln1.weight, ln1.bias, nn::Linear::fuse({q, k, vv}), o, ln2.weight, ln2.bias, fc1, fc2};
    opt.num_heads = c.num_attention_heads;
    opt.eps = c.layer_norm_eps;
    opt.act = nn::parse_activation(c.hidden_act, "clip text_config.hidden_act");
    opt.attn.causal = true;  // no padding mask: FluxPipeline passes none
  }
  at::Tensor operator()(const at::Tensor& x) const { return nn::encoder_layer(x, w, opt); }
};

}  // namespace

struct ClipTextModel::Impl {
  ClipTextConfig cfg;
  at::Tensor token_embedding, position_embedding;
  std::vector<EncoderLayer> layers;
  nn::LayerNorm final_layer_norm;
  Impl(const ClipTextConfig& c, const WeightView& w)
      : cfg(c),
        token_embedding(w.get("embeddings.token_embedding.weight", {c.vocab_size, c.hidden_size})),
        position_embedding(w.get("embeddings.position_embedding.weight", {c.max_position_embeddings, c.hidden_size})),
        final_layer_norm(nn::LayerNorm::load(w, "final_layer_norm", c.hidden_size, c.layer_norm_eps)) {
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers.emplace_back(w.sub("encoder.layers").sub(i), c);
  }
};

ClipTextModel::ClipTextModel(const ClipTextConfig& cfg, const WeightView& w)
    : impl_(std::make_shared<Impl>(cfg, w.sub("text_model"))) {}

ClipTextModel ClipTextModel::load(const std::string& folder, const RuntimeOptions& rt) {
  ClipTextConfig cfg = ClipTextConfig::from_config(Config::load(folder));
  auto store = WeightStore::open(folder, rt);
  // Older checkpoints store the non-persistent position_ids buffer; a CLIPTextModelWithProjection
  // folder adds text_projection, which CLIPTextModel does not use.
  store->ignore_prefix("text_model.embeddings.position_ids");
  store->ignore_prefix("text_projection.");
  ClipTextModel model(cfg, store->root());
  store->finish();
  return model;
}

const ClipTextConfig& ClipTextModel::config() const { return impl_->cfg; }

at::Tensor clip_pooled_index(const at::Tensor& input_ids, int64_t eos_token_id) {
  at::Tensor ids = input_ids.to(at::kCPU, at::kLong).contiguous();
  const int64_t b = ids.size(0), l = ids.size(1);
  at::Tensor out = at::empty({b}, at::kLong);
  const int64_t* p = ids.data_ptr<int64_t>();
  for (int64_t r = 0; r < b; ++r) {
    const int64_t* row = p + r * l;
    int64_t idx = 0;
    if (eos_token_id == 2) {  // legacy configs: argmax(ids), the first maximal position
      for (int64_t j = 1; j < l; ++j)
        if (row[j] > row[idx]) idx = j;
    } else {  // argmax(ids == eos): first EOS, or 0 when there is none (argmax of all-false)
      for (int64_t j = 0; j < l; ++j)
        if (row[j] == eos_token_id) {
          idx = j;
          break;
        }
    }
    out[r] = idx;
  }
  return out;
}

ClipTextOutput ClipTextModel::forward(const at::Tensor& input_ids) const {
  const Impl& m = *impl_;
  const ClipTextConfig& c = m.cfg;
  if (input_ids.dim() != 2 || input_ids.size(1) < 1 || input_ids.size(1) > c.max_position_embeddings ||
      at::isFloatingType(input_ids.scalar_type()))
    throw Error("input_ids must be integer [B, L] with 1 <= L <= max_position_embeddings", "ClipTextModel.forward",
                "[B, <= " + std::to_string(c.max_position_embeddings) + "]", shape_str(input_ids.sizes().vec()));
  at::Tensor ids = input_ids.to(at::kLong);
  if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c.vocab_size))
    throw Error("token id out of range", "ClipTextModel.forward", "0 <= id < " + std::to_string(c.vocab_size),
                std::to_string(ids.min().item<int64_t>()) + ".." + std::to_string(ids.max().item<int64_t>()));
  const auto dev = m.token_embedding.device();
  const int64_t l = ids.size(1);
  at::Tensor h = at::embedding(m.token_embedding, ids.to(dev)) + m.position_embedding.slice(0, 0, l).unsqueeze(0);
  tap("clip.embeddings", h);
  for (const auto& layer : m.layers) {
    h = layer(h);
    tap("clip.layer", h);
  }
  ClipTextOutput out;
  out.last_hidden_state = m.final_layer_norm(h);
  out.pooled_index = clip_pooled_index(ids, c.eos_token_id);
  // row r, position pooled_index[r] of the flattened [B * L, C] states
  at::Tensor flat_idx = at::arange(ids.size(0), at::kLong) * l + out.pooled_index;
  out.pooler_output = out.last_hidden_state.flatten(0, 1).index_select(0, flat_idx.to(dev));
  return out;
}

}  // namespace omniflux
