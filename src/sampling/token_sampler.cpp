#include "sampling/token_sampler.h"

#include <limits>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux::sampling {

TokenSampler::TokenSampler(const SamplerSpec& spec, const at::Tensor& prompt_ids, const c10::Device& device)
    : spec_(spec), warp_(spec.sampling), gen_(make_generator(spec.sampling.seed, device)) {
  const char* where = "sampling::TokenSampler";
  const int64_t B = spec.rows, V = spec.vocab;
  if (B < 1 || V < 1 || spec.max_new_tokens < 1 || spec.token_offset < 0)
    throw Error("impossible sampler shape", where, "rows, vocab, max_new_tokens >= 1, token_offset >= 0",
                shape_str({B, V, spec.max_new_tokens, spec.token_offset}));
  const auto lo = at::TensorOptions().dtype(at::kLong).device(device);
  const auto fo = at::TensorOptions().dtype(at::kFloat).device(device);
  if (spec.sampling.repetition_penalty != 1.0) {
    int64_t L = 0;
    if (prompt_ids.defined() && prompt_ids.numel() > 0) {
      if (prompt_ids.dim() != 2 || prompt_ids.size(0) != B)
        throw Error("prompt ids must be [B, L]", where, "[" + std::to_string(B) + ", L]",
                    shape_str(prompt_ids.sizes().vec()));
      L = prompt_ids.size(1);
    }
    // -1 - token_offset < 0: slots not yet written fall outside every vocabulary, which the
    // repetition penalty ignores (apply_repetition_penalty), so the buffer can have its final size.
    history_ = at::full({B, L + spec.max_new_tokens}, -1, lo);
    if (L) history_.slice(1, 0, L).copy_(prompt_ids);
    written_ = at::full({1}, L, lo);
  }
  if (spec.presence_penalty != 0 || spec.frequency_penalty != 0) counts_ = at::zeros({B, V}, fo);
  if (!spec.logit_bias.empty()) {
    at::Tensor b = at::zeros({1, V}, at::kFloat);
    for (const auto& [id, value] : spec.logit_bias) {
      if (id < 0 || id >= V) throw Error("logit bias outside the vocabulary", where, "0.." + std::to_string(V - 1), std::to_string(id));
      b[0][id] += value;
    }
    bias_ = b.to(device);
  }
  if (!spec.sampling.suppress_tokens.empty())
    suppress_ = suppress_tokens(at::zeros({1, V}), spec.sampling.suppress_tokens).isinf().to(device);
  warp_.suppress_tokens.clear();
  warp_.repetition_penalty = 1.0;
}

at::Tensor TokenSampler::sample(const at::Tensor& logits) {
  const int64_t B = spec_.rows;
  const bool cfg = spec_.guidance_scale != 1.0;
  if (!logits.defined() || logits.dim() != 2 || logits.size(0) != (cfg ? 2 * B : B) || logits.size(1) != spec_.vocab)
    throw Error("logits do not fit the sampler", "sampling::TokenSampler::sample",
                shape_str({cfg ? 2 * B : B, spec_.vocab}), logits.defined() ? shape_str(logits.sizes().vec()) : "undefined");
  at::Tensor raw = logits.to(at::kFloat);
  at::Tensor s = cfg ? cfg_combine(raw.slice(0, 0, B), raw.slice(0, B), spec_.guidance_scale) : raw;
  if (bias_.defined()) s = s + bias_;
  if (counts_.defined())
    s = s - counts_ * spec_.frequency_penalty - counts_.gt(0).to(at::kFloat) * spec_.presence_penalty;
  if (history_.defined())
    s = apply_repetition_penalty(s, history_ - spec_.token_offset, spec_.sampling.repetition_penalty);
  if (suppress_.defined()) s = s.masked_fill(suppress_, -std::numeric_limits<float>::infinity());
  at::Tensor col;
  if (spec_.sampling.do_sample) {
    col = sample_categorical(apply_warpers(s, warp_), gen_);
  } else {
    col = s.argmax(-1);
  }
  if (counts_.defined()) counts_.scatter_add_(1, col.view({B, 1}), at::ones({B, 1}, counts_.options()));
  at::Tensor next = col + spec_.token_offset;
  if (history_.defined()) {
    history_.index_copy_(1, written_, next.view({B, 1}));
    written_.add_(1);
  }
  return next;
}

}  // namespace omniflux::sampling
