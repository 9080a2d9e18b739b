#include "omniflux/sampling/text_generation.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "omniflux/error.h"
#include "nn/debug.h"
#include "sampling/decode_graph.h"
#include "sampling/token_sampler.h"

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

TextGeneration generate_text(const at::Tensor& first_logits, const std::function<at::Tensor(const at::Tensor&)>& step,
                             const std::function<std::string(const std::vector<int64_t>&)>& decode,
                             const TextGenerationOptions& o, const at::Tensor& prompt_ids,
                             const TextPieceCallback& on_piece, KVCache* graph_cache) {
  if (!first_logits.defined() || first_logits.dim() != 2 || first_logits.size(0) != 1)
    throw Error("first logits must be [1, V]", "sampling::generate_text", "[1, V]",
                first_logits.defined() ? shape_str(first_logits.sizes().vec()) : "undefined");
  const int64_t vocab = first_logits.size(1);
  check_options(o, vocab);
  const auto dev = first_logits.device();
  SamplerSpec spec;
  spec.sampling = o.sampling;
  spec.vocab = vocab;
  spec.max_new_tokens = o.max_new_tokens;
  spec.presence_penalty = o.presence_penalty;
  spec.frequency_penalty = o.frequency_penalty;
  spec.logit_bias = o.logit_bias;
  // Prompt and answer ids for the repetition penalty (HF penalises both).
  TokenSampler sampler(spec, o.sampling.repetition_penalty != 1.0 ? prompt_ids : at::Tensor(), dev);
  std::unique_ptr<DecodeGraph> graph = graph_cache ? std::make_unique<DecodeGraph>(*graph_cache, step, sampler) : nullptr;
  // On CUDA the host reads each id (to decode text) while the device already runs the next step:
  // the id is copied into pinned memory before that step is queued, so reading it waits for the
  // copy only. When the answer ends, one step was queued for nothing; none past max_new_tokens.
  const bool cuda = dev.is_cuda();
  at::Tensor host_id = at::empty({1}, at::TensorOptions().dtype(at::kLong).pinned_memory(cuda));

  TextGeneration out;
  std::vector<int64_t> ids;
  std::string text;    // decode(ids), up to a stop string once one was found
  size_t emitted = 0;  // bytes of `text` already passed to on_piece
  size_t searched = 0; // stop strings were looked for in text[0, searched)
  auto flush = [&](size_t upto) {
    if (!on_piece || upto <= emitted) return true;
    const bool go_on = on_piece(text.substr(emitted, upto - emitted));
    emitted = upto;
    return go_on;
  };
  at::Tensor next_dev = sampler.sample(first_logits);
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    // The step for token i + 1 (none past max_new_tokens). A graph's output is overwritten by its
    // next replay, which stream order puts after the copy of this id.
    auto queue_next = [&] {
      if (i + 1 < o.max_new_tokens) next_dev = graph ? graph->run(next_dev) : sampler.sample(step(next_dev));
    };
    host_id.copy_(next_dev, /*non_blocking=*/cuda);
    if (cuda) {  // queue the next step before waiting for this id (on the CPU it would run first)
      c10::Event copied(dev.type());
      copied.record(c10::impl::VirtualGuardImpl(dev.type()).getStream(dev));
      queue_next();
      copied.synchronize();
    }
    const int64_t next = host_id.item<int64_t>();
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
    if (!cuda) queue_next();
  }
  if (out.finish != FinishReason::Stop) text = ids.empty() ? std::string() : decode(ids);
  if (!flush(text.size())) out.finish = FinishReason::Cancelled;
  out.text = std::move(text);
  return out;
}

}  // namespace omniflux::sampling
