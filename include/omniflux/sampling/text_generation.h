#pragma once
// The token loop of a chat answer, shared by every language model that answers in text
// (Qwen2.5-VL for UniWorld-V1, the X-Omni LM): processors and sampling in Hugging Face order,
// OpenAI's presence/frequency penalties and logit bias, end tokens, stop strings, and the text
// streamed in complete UTF-8 pieces with a cancel on every token.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/sampling/token_sampling.h"

namespace omniflux::sampling {

struct TextGenerationOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;  // greedy unless sampling.do_sample; repetition_penalty applies either way
  // OpenAI's definitions, over the tokens generated so far (not the prompt):
  //   logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty
  double presence_penalty = 0, frequency_penalty = 0;
  std::vector<std::pair<int64_t, double>> logit_bias;  // added to the logit of each token id
  std::vector<int64_t> eos_token_ids;                  // the answer ends before the first of these
  std::vector<std::string> stop;                       // the answer ends before the first of these in its text
  // Called after each sampled token with the number sampled so far; false cancels.
  std::function<bool(int64_t generated)> on_token;
};

enum class FinishReason { Stop, Length, Cancelled };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled"

struct TextGeneration {
  std::string text;              // the answer, up to (not including) a stop string
  int64_t completion_tokens = 0; // tokens sampled, the end token included
  FinishReason finish = FinishReason::Length;
};

// A streamed piece of the answer; returning false cancels before the next token.
using TextPieceCallback = std::function<bool(const std::string& piece)>;

// first_logits [1, V] of the prompt's last position; step(id) feeds one token (id: [1] int64 on
// the logits' device, never read back by the loop before the step is queued) and returns the next
// logits [1, V]; decode(ids) is the text of the answer's ids so far. prompt_ids [1, L] feed the
// repetition penalty (undefined when it is off). The pieces passed to on_piece concatenate to the
// returned text: text that could still become a stop string is held back until it cannot.
// On CUDA the loop queues the step for token i + 1 before it reads token i, so the device does not
// wait for the host's text work (when the answer ends, that one step ran for nothing); elsewhere
// it reads token i first. graph_cache: as sampling::generate's (decode graphs).
TextGeneration generate_text(const at::Tensor& first_logits, const std::function<at::Tensor(const at::Tensor&)>& step,
                             const std::function<std::string(const std::vector<int64_t>&)>& decode,
                             const TextGenerationOptions& options, const at::Tensor& prompt_ids = {},
                             const TextPieceCallback& on_piece = {}, KVCache* graph_cache = nullptr);

// Decoding the ids of a partial UTF-8 character gives U+FFFD at the end of the text: the length of
// `s` without those trailing replacement characters, so a streamed piece never splits a character.
size_t complete_utf8_prefix(const std::string& s);

}  // namespace omniflux::sampling
