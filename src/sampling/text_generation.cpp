#include "omniflux/sampling/text_generation.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/debug.h"

namespace omniflux::sampling {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
  }
  return "?";
}

size_t complete_utf8_prefix(const std::string& s) {
  static const std::string repl = "\xEF\xBF\xBD";
  size_t n = s.size();
  while (n >= repl.size() && s.compare(n - repl.size(), repl.size(), repl) == 0) n -= repl.size();
  return n;
}

namespace {

void check_options(const TextGenerationOptions& o, int64_t vocab) {
  const char* where = "sampling::generate_text";
  if (o.max_new_tokens < 1) throw Error("max_new_tokens must be >= 1", where, ">= 1", std::to_string(o.max_new_tokens));
  for (double p : {o.presence_penalty, o.frequency_penalty})
    if (!std::isfinite(p) || p < -2 || p > 2) throw Error("presence/frequency penalty out of range", where, "-2..2", std::to_string(p));
  for (const auto& [id, bias] : o.logit_bias) {
    if (id < 0 || id >= vocab) throw Error("logit_bias names a token outside the vocabulary", where, "0.." + std::to_string(vocab - 1), std::to_string(id));
    if (!std::isfinite(bias) || bias < -100 || bias > 100) throw Error("logit_bias value out of range", where, "-100..100", std::to_string(bias));
  }
  for (const auto& s : o.stop)
    if (s.empty()) throw Error("empty stop string", where, "a non-empty string", "\"\"");
}

// Where the first stop string starts in `text` at or after `from` (npos if none).
size_t find_stop(const std::string& text, const std::vector<std::string>& stop, size_t from) {
  size_t best = std::string::npos;
  for (const auto& s : stop) {
    const size_t start = from >= s.size() ? from - s.size() + 1 : 0;  // it may straddle `from`
    const size_t p = text.find(s, start);
    if (p != std::string::npos) best = std::min(best, p);
  }
  return best;
}

// The length of the longest tail of `text` that is a proper prefix of a stop string: text that a
// stream must hold back because the next token may complete the stop string.
size_t stop_prefix_tail(const std::string& text, const std::vector<std::string>& stop) {
  size_t tail = 0;
  for (const auto& s : stop)
    for (size_t k = std::min(s.size() - 1, text.size()); k > tail; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        tail = k;
        break;
      }
  return tail;
}

}  // namespace

TextGeneration generate_text(const at::Tensor& first_logits, const std::function<at::Tensor(int64_t)>& step,
                             const std::function<std::string(const std::vector<int64_t>&)>& decode,
                             const TextGenerationOptions& o, const at::Tensor& prompt_ids,
                             const TextPieceCallback& on_piece) {
  if (!first_logits.defined() || first_logits.dim() != 2 || first_logits.size(0) != 1)
    throw Error("first logits must be [1, V]", "sampling::generate_text", "[1, V]",
                first_logits.defined() ? shape_str(first_logits.sizes().vec()) : "undefined");
  const int64_t vocab = first_logits.size(1);
  check_options(o, vocab);
  const auto dev = first_logits.device();
  at::Generator gen = make_generator(o.sampling.seed, dev);
  const bool penalties = o.presence_penalty != 0 || o.frequency_penalty != 0;
  at::Tensor counts = penalties ? at::zeros({1, vocab}, first_logits.options().dtype(at::kFloat)) : at::Tensor();
  at::Tensor bias;
  if (!o.logit_bias.empty()) {
    bias = at::zeros({1, vocab}, at::kFloat);
    for (const auto& [id, b] : o.logit_bias) bias[0][id] += b;
    bias = bias.to(dev);
  }
  // Prompt and answer ids for the repetition penalty (HF penalises both).
  at::Tensor history;
  if (o.sampling.repetition_penalty != 1.0)
    history = prompt_ids.defined() ? prompt_ids.to(dev, at::kLong) : at::empty({1, 0}, first_logits.options().dtype(at::kLong));

  TextGeneration out;
  std::vector<int64_t> ids;
  std::string text;    // decode(ids), up to a stop string once one was found
  size_t emitted = 0;  // bytes of `text` already passed to on_piece
  size_t searched = 0; // stop strings were looked for in text[0, searched)
  at::Tensor logits = first_logits;
  auto flush = [&](size_t upto) {
    if (!on_piece || upto <= emitted) return true;
    const bool go_on = on_piece(text.substr(emitted, upto - emitted));
    emitted = upto;
    return go_on;
  };
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    at::Tensor scores = logits.to(at::kFloat);
    if (bias.defined()) scores = scores + bias;
    if (penalties) scores = scores - counts * o.frequency_penalty - (counts > 0).to(at::kFloat) * o.presence_penalty;
    scores = process_scores(scores, history, o.sampling);
    const int64_t next = (o.sampling.do_sample ? sample_categorical(scores, gen) : scores.argmax(-1)).item<int64_t>();
    if (tapping()) tap("sampling.text_token", at::tensor({next}, at::kLong));  // the ranks' choices, compared in tests
    ++out.completion_tokens;
    if (std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), next) != o.eos_token_ids.end()) {
      out.finish = FinishReason::Stop;
      break;
    }
    ids.push_back(next);
    text = decode(ids);
    const size_t complete = complete_utf8_prefix(text);
    if (!o.stop.empty()) {
      const size_t at = find_stop(text, o.stop, searched);
      if (at != std::string::npos) {
        text.resize(at);
        out.finish = FinishReason::Stop;
        break;
      }
      searched = complete;
    }
    const size_t hold = o.stop.empty() ? 0 : stop_prefix_tail(text.substr(0, complete), o.stop);
    if (!flush(complete - hold) || (o.on_token && !o.on_token(out.completion_tokens))) {
      out.finish = FinishReason::Cancelled;
      out.text = text.substr(0, emitted);
      return out;
    }
    if (i + 1 == o.max_new_tokens) break;  // no step for a token that will not be sampled
    at::Tensor id = at::full({1, 1}, next, at::TensorOptions().dtype(at::kLong).device(dev));
    if (history.defined()) history = at::cat({history, id}, 1);
    if (penalties) counts.index_put_({0, next}, counts.index({0, next}) + 1);
    logits = step(next);
  }
  if (out.finish != FinishReason::Stop) text = ids.empty() ? std::string() : decode(ids);
  if (!flush(text.size())) out.finish = FinishReason::Cancelled;
  out.text = std::move(text);
  return out;
}

}  // namespace omniflux::sampling
