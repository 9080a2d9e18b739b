// X-Omni LM, after the HF remote code modeling_xomni.py (XOmniModel, XOmniDecoderLayer,
// XOmniForCausalLM) on transformers 4.51 Qwen2 layers.
#include "omniflux/models/xomni_lm.h"

#include <filesystem>

#include <tuple>

#include <ATen/ATen.h>

#include "checks.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "models/qwen2_layers.h"
#include "nn/debug.h"
#include "nn/ops.h"
#include "nn/rotary.h"
#include "sampling/decode_graph.h"

namespace omniflux {

XOmniLMConfig XOmniLMConfig::from_json(const omniflux::Config& json) {
  XOmniLMConfig c;
  c.text = Qwen2Config::from_json(json);
  const int64_t L = c.text.num_hidden_layers;
  c.num_mm_adap_layers = json.get_int("num_mm_adap_layers", c.num_mm_adap_layers, 0, L);
  c.num_mm_head_layers = json.get_int("num_mm_head_layers", c.num_mm_head_layers, 0, L);
  c.mm_vocab_size = json.get_size("mm_vocab_size", c.mm_vocab_size);
  c.image_vocab_size = json.get_int("image_vocab_size", c.image_vocab_size, 1, c.mm_vocab_size);
  if (json.has("mm_special_tokens")) c.mm_special_tokens = json.get_string_list("mm_special_tokens");
  json.check(c.num_mm_adap_layers + c.num_mm_head_layers <= L, "num_mm_adap_layers",
             "adap + head <= num_hidden_layers " + std::to_string(L),
             std::to_string(c.num_mm_adap_layers) + " + " + std::to_string(c.num_mm_head_layers));
  json.check(c.text.vocab_size + c.mm_vocab_size <= omniflux::Config::kMaxSize, "mm_vocab_size",
             "vocab_size + mm_vocab_size <= " + std::to_string(omniflux::Config::kMaxSize), std::to_string(c.mm_vocab_size));
  return c;
}

void XOmniLM::check_image_token_ids(
    const std::function<std::optional<int64_t>(const std::string&)>& token_to_id) const {
  const int64_t V = cfg_.text.vocab_size;
  for (int64_t k : {int64_t(0), int64_t(1), cfg_.image_vocab_size - 1}) {
    const std::string tok = "<MM-Token-" + std::to_string(k) + ">";
    const int64_t id = text::require_token_id(token_to_id(tok), tok, "X-Omni image code (id " + std::to_string(V + k) + ")");
    if (id != V + k)
      throw Error("image code ids do not follow vocab_size + k", tok, std::to_string(V + k), std::to_string(id));
  }
}

void XOmniLM::check_image_token_ids(const text::Tokenizer& tokenizer) const {
  check_image_token_ids([&](const std::string& t) { return tokenizer.token_to_id(t); });
}

XOmniLM XOmniLM::load(const std::string& folder, const RuntimeOptions& rt) {
  auto store = WeightStore::open(folder, rt);
  return load(folder, *store, rt);
}

XOmniLM XOmniLM::load(const std::string& folder, WeightStore& s, const RuntimeOptions& rt) {
  XOmniLM lm;
  lm.rt_ = rt;
  lm.cfg_ = XOmniLMConfig::from_json(omniflux::Config::load(folder));
  const Qwen2Config& c = lm.cfg_.text;
  qwen2::check_tensor_parallel(c, rt, (std::filesystem::path(folder) / "config.json").string());
  const int64_t H = c.hidden_size, V = c.vocab_size, M = lm.cfg_.mm_vocab_size;
  WeightStore* store = &s;
  const WeightView m = store->root().sub("model");
  lm.lm_embed_ = m.get("lm_embed_tokens.weight", {V, H});
  lm.mm_embed_ = m.get("mm_embed_tokens.weight", {M, H});
  lm.layers_ = qwen2::DecoderStack::load(m.sub("layers"), c, rt);
  lm.lm_norm_ = m.get("lm_norm.weight", {H});
  lm.mm_norm_ = m.get("mm_norm.weight", {H});
  lm.lm_head_ = nn::cpu_gemv_layout(store->root().get("lm_head.weight", {V, H}));
  // Only the image-code rows of mm_head are ever used (image mode); the view keeps the mapping.
  lm.image_head_ = nn::cpu_gemv_layout(store->root().get("mm_head.weight", {M, H}).slice(0, 0, lm.cfg_.image_vocab_size));
  if (lm.lm_head_.device().is_cpu()) {  // both heads are copies there (nn::cpu_gemv_layout)
    store->drop_pages("lm_head.");
    store->drop_pages("mm_head.");
  }
  store->ignore_prefix("image_tokenizer.");  // declared ignorable by the remote code
  store->ignore_prefix("model.rotary_emb.");
  store->finish();
  lm.inv_freq_ = nn::rope_inv_freq(c.head_dim, c.rope_theta).to(rt.torch_device());
  const auto tok = std::filesystem::path(folder) / "tokenizer.json";
  if (std::filesystem::is_directory(folder) && std::filesystem::exists(tok)) {
    text::check_tokenizer_folder(folder, rt.allow_outside_paths);
    lm.check_image_token_ids(*text::load_tokenizer(folder));
  }
  return lm;
}

nn::KVCache XOmniLM::new_cache(int64_t batch, int64_t capacity) const {
  const Qwen2Config& c = cfg_.text;
  const int64_t kv_heads = qwen2::TensorSplit::of(c, rt_, "XOmniLM::new_cache").kv_heads;
  return nn::KVCache(c.num_hidden_layers, batch, kv_heads, capacity, c.head_dim,
                     at::TensorOptions().dtype(rt_.compute_dtype()).device(rt_.torch_device()));
}

at::Tensor XOmniLM::hidden_states(const at::Tensor& ids_in, nn::KVCache& cache, const at::Tensor& attention_mask) const {
  const int64_t V = cfg_.text.vocab_size;
  at::Tensor ids = ids_in.to(lm_embed_.device());
  at::Tensor is_mm = ids >= V;  // [B, S]
  at::Tensor mm3 = is_mm.unsqueeze(-1);
  // XOmniModel.embed_tokens: each id embedded by its own table.
  at::Tensor x = at::where(mm3, at::embedding(mm_embed_, (ids - V).clamp_min(0)),
                           at::embedding(lm_embed_, ids.clamp_max(V - 1)));
  if (tapping()) {
    tap("xomni.is_mm", is_mm);
    tap("xomni.embeddings", x);
  }
  nn::AttentionOptions attn = cache.begin_step(ids.size(1), attention_mask);
  auto [cos, sin] = nn::rope_cos_sin(cache.positions(), inv_freq_);
  layers_->layers.run([&](const qwen2::DecoderLayer& layer, int64_t i) {
    at::Tensor y = layer.forward(x, cos, sin, cache, i, attn);
    // Adapter / head layers: text positions keep their state (their K/V were still written).
    x = cfg_.routed(i) ? at::where(mm3, y, x) : y;
    if (tapping()) tap("xomni.layer_output", x);
  });
  cache.end_step();
  const double eps = cfg_.text.rms_norm_eps;
  return at::where(mm3, nn::rms_norm(x, mm_norm_, eps), nn::rms_norm(x, lm_norm_, eps));
}

at::Tensor XOmniLM::logits(const at::Tensor& hidden, XOmniMode mode) const {
  return nn::linear(hidden, mode == XOmniMode::Image ? image_head_ : lm_head_);
}

at::Tensor XOmniLM::prefill(const at::Tensor& ids, nn::KVCache& cache, XOmniMode mode, const at::Tensor& attention_mask,
                            int64_t logits_to_keep) const {
  check_token_ids(ids, cfg_.text.vocab_size + cfg_.mm_vocab_size, "XOmniLM::prefill");
  if (ids.size(0) != cache.batch())
    throw Error("batch size differs from the cache's", "XOmniLM::prefill", std::to_string(cache.batch()),
                std::to_string(ids.size(0)));
  at::Tensor h = hidden_states(ids, cache, attention_mask);
  const int64_t S = h.size(1);
  if (logits_to_keep > 0 && logits_to_keep < S) h = h.slice(1, S - logits_to_keep);
  return logits(h, mode);
}

at::Tensor XOmniLM::decode_one(const at::Tensor& ids, nn::KVCache& cache, XOmniMode mode) const {
  if (ids.dim() != 1 || ids.size(0) != cache.batch())
    throw Error("decode_one takes one token per row", "XOmniLM::decode_one", "[" + std::to_string(cache.batch()) + "]",
                shape_str(ids.sizes().vec()));
  return logits(hidden_states(ids.unsqueeze(1), cache), mode).squeeze(1);
}

std::pair<at::Tensor, at::Tensor> XOmniLM::cfg_rows(const at::Tensor& prompt_ids, const at::Tensor& negative_ids) const {
  for (const at::Tensor* t : {&prompt_ids, &negative_ids})
    if (!t->defined() || t->dim() != 2 || t->size(0) != 1 || t->size(1) < 1)
      throw Error("one row of ids per CFG branch", "XOmniLM::cfg_rows", "[1, L] with L >= 1",
                  t->defined() ? shape_str(t->sizes().vec()) : "undefined");
  // Built where the ids are (the pipeline's are on the host); generate_image_codes moves them.
  const auto opts = prompt_ids.options().dtype(at::kLong);
  const int64_t L = prompt_ids.size(-1), Ln = negative_ids.size(-1), S = std::max(L, Ln);
  // Pads are masked keys: their id is irrelevant.
  auto pad = [&](const at::Tensor& t) { return at::cat({at::zeros({1, S - t.size(-1)}, opts), t.reshape({1, -1}).to(opts)}, 1); };
  auto pad_mask = [&](int64_t len) { return at::cat({at::zeros({1, S - len}, opts), at::ones({1, len}, opts)}, 1); };
  return {at::cat({pad(prompt_ids), pad(negative_ids)}), at::cat({pad_mask(L), pad_mask(Ln)})};
}

at::Tensor XOmniLM::generate_image_codes(const at::Tensor& prompt_ids, const at::Tensor& negative_ids, int64_t n_codes,
                                         const ImageGeneration& opt) const {
  if (n_codes < 1) throw Error("n_codes must be >= 1", "XOmniLM::generate_image_codes", ">= 1", std::to_string(n_codes));
  check_context_length(std::max(prompt_ids.size(-1), negative_ids.defined() ? negative_ids.size(-1) : int64_t(0)), n_codes,
                       cfg_.text.max_position_embeddings, "X-Omni generate");
  check_token_ids(prompt_ids, cfg_.text.vocab_size + cfg_.mm_vocab_size, "XOmniLM::generate_image_codes prompt");
  if (prompt_ids.size(0) != 1)
    throw Error("one prompt at a time", "XOmniLM::generate_image_codes", "[1, L]", shape_str(prompt_ids.sizes().vec()));
  const auto dev = rt_.torch_device();
  const bool cfg = opt.guidance_scale != 1.0;
  if (cfg)
    check_token_ids(negative_ids, cfg_.text.vocab_size + cfg_.mm_vocab_size,
                           "XOmniLM::generate_image_codes negative prompt");
  // CFG parallelism: each rank of the CFG pair runs its own row (no padding), and the two rows'
  // logits are gathered at every step, so the sampler sees the same [2, V] as below.
  const ProcessGroup* pair = cfg && rt_.parallel && rt_.parallel->cfg().size() == 2 ? &rt_.parallel->cfg() : nullptr;
  at::Tensor ids = prompt_ids.to(dev, at::kLong), mask;
  if (pair) {
    if (pair->rank() == 1) ids = negative_ids.to(dev, at::kLong);
  } else if (cfg) {
    std::tie(ids, mask) = cfg_rows(prompt_ids, negative_ids.to(prompt_ids.device()));
    ids = ids.to(dev), mask = mask.to(dev);
  }
  nn::KVCache cache = new_cache(ids.size(0), ids.size(1) + n_codes);
  at::Tensor first = prefill(ids, cache, XOmniMode::Image, mask).squeeze(1);
  if (pair) first = pair->all_gather(first, 0);
  check_finite(first, "X-Omni prefill logits");
  sampling::TokenLoopOptions g;
  g.max_new_tokens = n_codes;
  g.sampling = opt.sampling;
  g.guidance_scale = opt.guidance_scale;
  g.token_offset = token_offset(XOmniMode::Image);
  // Suppressed ids are absolute; the scores cover only the image codes.
  for (int64_t& id : g.sampling.suppress_tokens) id -= g.token_offset;
  if (opt.progress) g.on_token = [&](int64_t done) { return opt.progress("tokens", done, n_codes); };
  auto step = [&](const at::Tensor& next) {
    if (!pair) return decode_one(next, cache, XOmniMode::Image);
    return pair->all_gather(decode_one(next.slice(0, pair->rank(), pair->rank() + 1), cache, XOmniMode::Image), 0);
  };
  auto r = sampling::generate(first, step, g, prompt_ids.to(dev, at::kLong), sampling::decode_graph_cache(cache, rt_));
  return r.tokens - g.token_offset;
}

}  // namespace omniflux
