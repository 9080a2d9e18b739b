#pragma once
// The per-token work between two model steps, shared by the image-code loop (sampling::generate)
// and the chat loop (sampling::generate_text): logits in, the next ids out, on the logits' device.
//
// It is a fixed-shape function of device tensors, so a decode step followed by sample() can be
// captured as one CUDA graph (sampling/decode_graph.h): the ids seen so far (for the repetition
// penalty) sit in a buffer of the final length, filled with -1 where nothing is written yet (the
// penalty ignores ids outside the vocabulary), and are written at a device counter; the OpenAI
// counts, the logit bias and the suppressed ids are device tensors made once; the draw uses the
// sampler's own generator. Nothing in sample() reads device memory back or depends on a host value
// that changes from one token to the next.
//
// Order (Hugging Face generate, then OpenAI's additions, which never meet CFG): CFG combine, logit
// bias, presence/frequency penalties, repetition penalty, suppressed ids; then, when sampling,
// temperature, top-k, top-p, min-p and the draw; greedy is the argmax.
#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "omniflux/sampling/token_sampling.h"

namespace omniflux::sampling {

struct SamplerSpec {
  SamplingOptions sampling;
  int64_t rows = 1;              // B: ids per step (the logits have 2B rows with CFG)
  int64_t vocab = 0;             // V: columns of the logits
  int64_t max_new_tokens = 1;    // the history buffer's room after the prompt
  double guidance_scale = 1.0;   // != 1: [2B, V] logits, conditional rows first
  int64_t token_offset = 0;      // added to the column to get the id (X-Omni's image codes)
  double presence_penalty = 0, frequency_penalty = 0;  // OpenAI's, over the generated ids
  std::vector<std::pair<int64_t, double>> logit_bias;  // column, bias
};

class TokenSampler {
 public:
  // prompt_ids [B, L] start the repetition penalty's history (undefined: none).
  TokenSampler(const SamplerSpec& spec, const at::Tensor& prompt_ids, const c10::Device& device);

  // logits [B or 2B, V] -> the next ids [B] int64 (token_offset added). Records them for the
  // penalties.
  at::Tensor sample(const at::Tensor& logits);

  at::Generator& generator() { return gen_; }

 private:
  SamplerSpec spec_;
  SamplingOptions warp_;        // the warpers' options (processors are done here)
  at::Generator gen_;
  at::Tensor history_;          // [B, L + max_new] ids, -1 where not written; undefined: no penalty
  at::Tensor written_;          // [1] int64: the history's next column
  at::Tensor counts_;           // [B, V] float: times each column was generated (OpenAI penalties)
  at::Tensor bias_;             // [1, V] float logit bias
  at::Tensor suppress_;         // [1, V] bool
};

}  // namespace omniflux::sampling
