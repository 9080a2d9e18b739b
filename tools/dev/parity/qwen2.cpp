// Parity case qwen2_lm: full-prompt logits, greedy decoding through the static KV cache, and the
// per-layer outputs of the prefill.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/models/qwen2.h"
#include "nn/debug.h"
#include "omniflux/sampling/token_sampling.h"
#include "parity.h"
#include "sampling/decode_graph.h"

using omniflux::parity::ParityOutputs;
using namespace omniflux;

OMNIFLUX_PARITY_CASE(qwen2_lm) {
  ParityOutputs out;
  auto lm = Qwen2ForCausalLM::load((std::filesystem::path(ctx.file("config")).parent_path()).string(), ctx.rt);
  at::Tensor ids = ctx.input("input_ids");
  std::vector<at::Tensor> layers;
  {
    DebugScope scope([&](const std::string& name, const at::Tensor& t) {
      if (name == "qwen2.layer_output") layers.push_back(t.to(at::kFloat).cpu());
    });
    out["logits"] = lm.forward(ids).to(at::kFloat);
  }
  out["inter_layer_outputs"] = at::stack(layers);

  const int64_t n_new = ctx.spec->at("outputs").at("generated_ids").at("shape")[1].get<int64_t>();
  auto cache = lm.new_cache(ids.size(0), ids.size(1) + n_new);
  at::Tensor first = lm.prefill(ids, cache).squeeze(1);
  sampling::TokenLoopOptions g;
  g.max_new_tokens = n_new;
  g.keep_step_logits = true;
  auto r = sampling::generate(first, [&](const at::Tensor& next) { return lm.decode_one(next, cache); }, g, {},
                              sampling::decode_graph_cache(cache, ctx.rt));  // --decode-graphs
  out["generated_ids"] = r.tokens.cpu();
  out["generated_step_logits"] = r.step_logits.cpu();
  return out;
}
