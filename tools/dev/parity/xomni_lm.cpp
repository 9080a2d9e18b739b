// Parity case xomni_lm: text- and image-mode logits of a mixed sequence, the token-type-normed
// hidden states, greedy image codes through the KV cache, and the first CFG step's scores with the
// unconditional prompt as a second, left-padded row of the same cache.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/models/xomni_lm.h"
#include "nn/debug.h"
#include "omniflux/sampling/token_sampling.h"
#include "parity.h"
#include "sampling/decode_graph.h"

using omniflux::parity::ParityOutputs;
using namespace omniflux;

OMNIFLUX_PARITY_CASE(xomni_lm) {
  ParityOutputs out;
  auto lm = XOmniLM::load(std::filesystem::path(ctx.file("config")).parent_path().string(), ctx.rt);
  at::Tensor ids = ctx.input("input_ids");
  const int64_t B = ids.size(0), L = ids.size(1);

  std::vector<at::Tensor> layers;
  {
    DebugScope scope([&](const std::string& name, const at::Tensor& t) {
      if (name == "xomni.layer_output") layers.push_back(t.to(at::kFloat).cpu());
      if (name == "xomni.is_mm") out["inter_is_mm"] = t.cpu();
      if (name == "xomni.embeddings") out["inter_embeddings"] = t.to(at::kFloat).cpu();
    });
    auto cache = lm.new_cache(B, L);
    at::Tensor h = lm.hidden_states(ids, cache);
    out["hidden_states"] = h.to(at::kFloat);
    out["text_logits"] = lm.logits(h, XOmniMode::Text).to(at::kFloat);
    out["image_logits"] = lm.logits(h, XOmniMode::Image).to(at::kFloat);
  }
  out["inter_layer_outputs"] = at::stack(layers);

  // Greedy image codes through the cache (absolute ids vocab_size + k).
  const int64_t n_new = ctx.spec->at("outputs").at("generated_ids").at("shape")[1].get<int64_t>();
  auto cache = lm.new_cache(B, L + n_new);
  at::Tensor first = lm.prefill(ids, cache, XOmniMode::Image).squeeze(1);
  sampling::TokenLoopOptions g;
  g.max_new_tokens = n_new;
  g.keep_step_logits = true;
  g.token_offset = lm.token_offset(XOmniMode::Image);
  auto r = sampling::generate(first, [&](const at::Tensor& t) { return lm.decode_one(t, cache, XOmniMode::Image); }, g,
                              {}, sampling::decode_graph_cache(cache, ctx.rt));  // --decode-graphs
  out["generated_ids"] = r.tokens.cpu();
  out["generated_step_logits"] = r.step_logits.to(at::kFloat).cpu();

  // CFG step 0: rows [cond; uncond left-padded] in one cache.
  at::Tensor neg = ctx.input("cfg_uncond_input_ids");
  const double gscale = ctx.input("cfg_guidance_scale").item<double>();
  const int64_t Ln = neg.size(1);
  at::Tensor both = at::cat({ids, at::cat({at::zeros({B, L - Ln}, neg.options()), neg}, 1)});
  at::Tensor mask = at::cat({at::ones({B, L}, at::kLong), at::cat({at::zeros({B, L - Ln}, at::kLong), at::ones({B, Ln}, at::kLong)}, 1)});
  auto cfg_cache = lm.new_cache(2 * B, L + 1);
  at::Tensor pair = lm.prefill(both, cfg_cache, XOmniMode::Image, mask).squeeze(1).to(at::kFloat);
  out["cfg_scores_step0"] = sampling::cfg_combine(pair.slice(0, 0, B), pair.slice(0, B), gscale).cpu();
  out["inter_cfg_uncond_logprobs"] = at::log_softmax(pair.slice(0, B), -1).cpu();
  return out;
}
