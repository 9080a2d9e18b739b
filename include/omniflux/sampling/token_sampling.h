#pragma once
// Token sampling as pure functions on logits [B, V] (float32 scores, as HF generate upcasts them),
// and a token loop over any model with prefill / decode_one steps.
//
// Order of Hugging Face generate (transformers 4.5x _get_logits_processor): classifier-free
// guidance, repetition penalty, suppress tokens; then, when sampling, the warpers temperature,
// top-k, top-p, min-p; then softmax and a draw. Greedy decoding applies only the processors.
// Filtered entries become -inf, as HF's filter_value.
#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

namespace omniflux {
class KVCache;  // omniflux/kv_cache.h
}

namespace omniflux::sampling {

// scores / temperature (temperature > 0).
at::Tensor apply_temperature(const at::Tensor& scores, double temperature);
// Keeps the entries >= the k-th largest score per row (ties kept); k is raised to min_keep and
// capped at V.
at::Tensor apply_top_k(const at::Tensor& scores, int64_t k, int64_t min_keep = 1);
// Nucleus: sorts ascending, drops entries whose cumulative probability is <= 1 - top_p, always
// keeping the `min_keep` most likely.
at::Tensor apply_top_p(const at::Tensor& scores, double top_p, int64_t min_keep = 1);
// Drops entries whose probability is < min_p * (the row's largest probability), keeping at least
// the `min_keep` most likely.
at::Tensor apply_min_p(const at::Tensor& scores, double min_p, int64_t min_keep = 1);
// Sets the given token ids to -inf (ids outside [0, V) are ignored, as HF's isin does).
at::Tensor suppress_tokens(const at::Tensor& scores, const std::vector<int64_t>& ids);
// CTRL repetition penalty on every id in previous_ids [B, L]: negative scores * penalty, positive
// ones / penalty.
at::Tensor apply_repetition_penalty(const at::Tensor& scores, const at::Tensor& previous_ids, double penalty);
// X-Omni / HF UnbatchedClassifierFreeGuidanceLogitsProcessor:
// g * (log_softmax(cond) - log_softmax(uncond)) + log_softmax(uncond), in float32.
at::Tensor cfg_combine(const at::Tensor& cond_logits, const at::Tensor& uncond_logits, double guidance_scale);

struct SamplingOptions {
  bool do_sample = false;          // false: greedy argmax
  double temperature = 1.0;        // the defaults are HF GenerationConfig's
  int64_t top_k = 50;              // 0 = off. HF's default is 50, also when the caller never set it.
  double top_p = 1.0;              // 1 = off
  double min_p = 0.0;              // 0 = off
  double repetition_penalty = 1.0; // 1 = off
  std::vector<int64_t> suppress_tokens;
  uint64_t seed = 0;
};

// The processors (repetition penalty, suppress tokens; applied also when greedy), the warpers
// (temperature, top-k, top-p, min-p; only when sampling), and both in HF order. previous_ids
// [B, L] feeds the repetition penalty (may be undefined when it is off).
at::Tensor apply_processors(const at::Tensor& logits, const at::Tensor& previous_ids, const SamplingOptions& opt);
at::Tensor apply_warpers(const at::Tensor& scores, const SamplingOptions& opt);
at::Tensor process_scores(const at::Tensor& logits, const at::Tensor& previous_ids, const SamplingOptions& opt);

// A seeded generator on `device`: the same seed gives the same draws.
at::Generator make_generator(uint64_t seed, const c10::Device& device);
// One draw per row from softmax(scores) [B, V] -> ids [B] int64, with no host synchronisation:
// argmax(p / E) with E ~ Exp(1) i.i.d. is an exact categorical draw (gpt-fast's trick; torch's
// multinomial stream is not reproduced).
at::Tensor sample_categorical(const at::Tensor& scores, at::Generator& gen);

// --- The token loop -------------------------------------------------------------------------

struct TokenLoopOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<int64_t> eos_token_ids;  // a row stops after emitting one; later slots get pad_token_id
  int64_t pad_token_id = 0;
  // Classifier-free guidance (X-Omni): when != 1 the step returns [2B, V] logits, rows [0, B)
  // conditional and [B, 2B) unconditional; both rows are fed the token sampled for the first.
  double guidance_scale = 1.0;
  // Added to the sampled column index to get the token id (a model whose logits cover only part
  // of the id space, e.g. X-Omni's image codes).
  int64_t token_offset = 0;
  // Rows stopping on EOS are checked on the host only every this many steps (one sync each).
  int64_t eos_check_every = 8;
  bool keep_step_logits = false;
  // Called on the host after each sampled token with the number sampled so far (it must not read
  // device tensors: no sync). Returning false stops the loop before the next step runs.
  std::function<bool(int64_t generated)> on_token;
};

struct TokenLoopResult {
  at::Tensor tokens;       // [B, n] int64 (n <= max_new_tokens; EOS included, pads after it)
  at::Tensor step_logits;  // [B, n, V] raw logits (the conditional rows with CFG), if kept
  bool cancelled = false;  // on_token returned false; tokens holds what was sampled until then
};

// first_logits: [B, V] (or [2B, V] with CFG) of the last prompt position, from the model's
// prefill. step(ids [B or 2B]) runs decode_one and returns the next logits. prompt_ids [B, L] feeds
// the repetition penalty (undefined when it is off).
// graph_cache: the cache `step` decodes into, when it is in fixed shapes and the step may run as a
// decode graph (RuntimeOptions::decode_graphs, docs/gpu.md §Decode graphs): step and sampling are
// then captured once per KV bucket and replayed; null: every step runs eagerly.
TokenLoopResult generate(const at::Tensor& first_logits, const std::function<at::Tensor(const at::Tensor&)>& step,
                        const TokenLoopOptions& opt, const at::Tensor& prompt_ids = {}, KVCache* graph_cache = nullptr);

}  // namespace omniflux::sampling
