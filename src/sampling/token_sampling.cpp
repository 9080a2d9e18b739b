// Token sampling after transformers generation/logits_process.py and generation/utils.py (4.5x).
#include "omniflux/sampling/token_sampling.h"

#include <cmath>
#include <limits>
#include <memory>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include "omniflux/error.h"
#include "sampling/decode_graph.h"
#include "sampling/token_sampler.h"

namespace omniflux::sampling {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

void check_scores(const at::Tensor& s, const char* where) {
  if (!s.defined() || s.dim() != 2 || s.size(1) < 1)
    throw Error("scores must be [B, V]", where, "[B, V]", s.defined() ? shape_str(s.sizes().vec()) : "undefined");
}

// Scatters a per-sorted-position flag back to vocabulary order.
at::Tensor unsort(const at::Tensor& sorted_flags, const at::Tensor& sorted_idx) {
  return at::zeros_like(sorted_flags).scatter(1, sorted_idx, sorted_flags);
}

}  // namespace

at::Tensor apply_temperature(const at::Tensor& scores, double temperature) {
  check_scores(scores, "sampling::apply_temperature");
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw Error("temperature must be a positive number", "sampling::apply_temperature", "> 0",
                std::to_string(temperature));
  return scores / temperature;
}

at::Tensor apply_top_k(const at::Tensor& scores, int64_t k, int64_t min_keep) {
  check_scores(scores, "sampling::apply_top_k");
  if (k < 0) throw Error("top_k must be >= 0", "sampling::apply_top_k", ">= 0", std::to_string(k));
  if (k == 0) return scores;
  k = std::min(std::max(k, min_keep), scores.size(1));
  at::Tensor kth = std::get<0>(at::topk(scores, k, -1)).select(1, k - 1).unsqueeze(1);
  return scores.masked_fill(scores < kth, kNegInf);
}

at::Tensor apply_top_p(const at::Tensor& scores, double top_p, int64_t min_keep) {
  check_scores(scores, "sampling::apply_top_p");
  if (!(top_p >= 0 && top_p <= 1)) throw Error("top_p must be in [0, 1]", "sampling::apply_top_p", "[0, 1]", std::to_string(top_p));
  if (top_p >= 1) return scores;
  auto [sorted, idx] = at::sort(scores, -1, /*descending=*/false);
  at::Tensor remove = at::softmax(sorted, -1).cumsum(-1) <= (1 - top_p);
  const int64_t keep = std::min(min_keep, scores.size(1));
  remove.slice(1, scores.size(1) - keep).fill_(false);
  return scores.masked_fill(unsort(remove, idx), kNegInf);
}

at::Tensor apply_min_p(const at::Tensor& scores, double min_p, int64_t min_keep) {
  check_scores(scores, "sampling::apply_min_p");
  if (!(min_p >= 0 && min_p <= 1)) throw Error("min_p must be in [0, 1]", "sampling::apply_min_p", "[0, 1]", std::to_string(min_p));
  if (min_p == 0) return scores;
  at::Tensor probs = at::softmax(scores, -1);
  at::Tensor remove = probs < min_p * std::get<0>(probs.max(-1, /*keepdim=*/true));
  at::Tensor idx = at::argsort(scores, -1, /*descending=*/true);
  at::Tensor sorted_remove = remove.gather(1, idx);
  sorted_remove.slice(1, 0, std::min(min_keep, scores.size(1))).fill_(false);
  return scores.masked_fill(unsort(sorted_remove, idx), kNegInf);
}

at::Tensor suppress_tokens(const at::Tensor& scores, const std::vector<int64_t>& ids) {
  check_scores(scores, "sampling::suppress_tokens");
  if (ids.empty()) return scores;
  std::vector<int64_t> in_range;
  for (int64_t id : ids)
    if (id >= 0 && id < scores.size(1)) in_range.push_back(id);
  if (in_range.empty()) return scores;
  at::Tensor out = scores.clone();
  out.index_fill_(1, at::tensor(in_range, at::kLong).to(scores.device()), kNegInf);
  return out;
}

at::Tensor apply_repetition_penalty(const at::Tensor& scores, const at::Tensor& previous_ids, double penalty) {
  check_scores(scores, "sampling::apply_repetition_penalty");
  if (!(penalty > 0)) throw Error("repetition_penalty must be positive", "sampling::apply_repetition_penalty", "> 0",
                                  std::to_string(penalty));
  if (penalty == 1.0 || !previous_ids.defined() || previous_ids.numel() == 0) return scores;
  if (previous_ids.dim() != 2 || previous_ids.size(0) != scores.size(0))
    throw Error("previous ids must be [B, L]", "sampling::apply_repetition_penalty",
                "[" + std::to_string(scores.size(0)) + ", L]", shape_str(previous_ids.sizes().vec()));
  // Each id seen counts once however often it appeared (HF gathers then scatters). Ids outside
  // the scored range (another vocabulary's tokens) are ignored.
  const int64_t V = scores.size(1);
  at::Tensor ids = previous_ids.to(scores.device(), at::kLong);
  at::Tensor valid = (ids >= 0).logical_and(ids < V);
  at::Tensor hits = at::zeros(scores.sizes(), ids.options()).scatter_add_(1, ids.clamp(0, V - 1), valid.to(at::kLong));
  at::Tensor penalised = at::where(scores < 0, scores * penalty, scores / penalty);
  return at::where(hits > 0, penalised, scores);
}

at::Tensor cfg_combine(const at::Tensor& cond_logits, const at::Tensor& uncond_logits, double guidance_scale) {
  check_scores(cond_logits, "sampling::cfg_combine");
  if (uncond_logits.sizes() != cond_logits.sizes())
    throw Error("unconditional logits differ in shape from the conditional ones", "sampling::cfg_combine",
                shape_str(cond_logits.sizes().vec()), shape_str(uncond_logits.sizes().vec()));
  at::Tensor s = at::log_softmax(cond_logits.to(at::kFloat), -1);
  at::Tensor u = at::log_softmax(uncond_logits.to(at::kFloat), -1);
  return guidance_scale * (s - u) + u;
}

at::Tensor apply_processors(const at::Tensor& logits, const at::Tensor& previous_ids, const SamplingOptions& o) {
  check_scores(logits, "sampling::apply_processors");
  at::Tensor s = logits.to(at::kFloat);
  s = apply_repetition_penalty(s, previous_ids, o.repetition_penalty);
  return suppress_tokens(s, o.suppress_tokens);
}

at::Tensor apply_warpers(const at::Tensor& scores, const SamplingOptions& o) {
  check_scores(scores, "sampling::apply_warpers");
  at::Tensor s = scores.to(at::kFloat);
  if (o.temperature != 1.0) s = apply_temperature(s, o.temperature);
  s = apply_top_k(s, o.top_k);
  s = apply_top_p(s, o.top_p);
  return apply_min_p(s, o.min_p);
}

at::Tensor process_scores(const at::Tensor& logits, const at::Tensor& previous_ids, const SamplingOptions& o) {
  at::Tensor s = apply_processors(logits, previous_ids, o);
  return o.do_sample ? apply_warpers(s, o) : s;
}

at::Generator make_generator(uint64_t seed, const c10::Device& device) {
  at::Generator gen = at::globalContext().defaultGenerator(device).clone();
  gen.set_current_seed(seed);
  return gen;
}

at::Tensor sample_categorical(const at::Tensor& scores, at::Generator& gen) {
  check_scores(scores, "sampling::sample_categorical");
  at::Tensor probs = at::softmax(scores.to(at::kFloat), -1);
  at::Tensor e = at::empty_like(probs).exponential_(1.0, gen).clamp_min_(std::numeric_limits<float>::min());
  return (probs / e).argmax(-1);
}

TokenLoopResult generate(const at::Tensor& first_logits, const std::function<at::Tensor(const at::Tensor&)>& step,
                        const TokenLoopOptions& opt, const at::Tensor& prompt_ids, KVCache* graph_cache) {
  check_scores(first_logits, "sampling::generate");
  if (opt.max_new_tokens < 1)
    throw Error("max_new_tokens must be >= 1", "sampling::generate", ">= 1", std::to_string(opt.max_new_tokens));
  const bool cfg = opt.guidance_scale != 1.0;
  if (cfg && first_logits.size(0) % 2 != 0)
    throw Error("CFG needs conditional and unconditional rows", "sampling::generate", "[2B, V]",
                shape_str(first_logits.sizes().vec()));
  const int64_t B = cfg ? first_logits.size(0) / 2 : first_logits.size(0);
  const auto dev = first_logits.device();
  const auto lopt = at::TensorOptions().dtype(at::kLong).device(dev);

  SamplerSpec spec;
  spec.sampling = opt.sampling;
  spec.rows = B;
  spec.vocab = first_logits.size(1);
  spec.max_new_tokens = opt.max_new_tokens;
  spec.guidance_scale = opt.guidance_scale;
  spec.token_offset = opt.token_offset;
  TokenSampler sampler(spec, opt.sampling.repetition_penalty != 1.0 ? prompt_ids : at::Tensor(), dev);
  std::unique_ptr<DecodeGraph> graph = graph_cache ? std::make_unique<DecodeGraph>(*graph_cache, step, sampler) : nullptr;

  at::Tensor eos = opt.eos_token_ids.empty() ? at::Tensor() : at::tensor(opt.eos_token_ids, at::kLong).to(dev);
  at::Tensor finished = at::zeros({B}, lopt.dtype(at::kBool));
  at::Tensor tokens = at::empty({B, opt.max_new_tokens}, lopt);
  std::vector<at::Tensor> kept;

  at::Tensor logits = first_logits;
  at::Tensor next = sampler.sample(first_logits);
  int64_t n = 0;
  bool cancelled = false;
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    // A graph's logits are overwritten by its next replay: keep a copy.
    if (opt.keep_step_logits) kept.push_back(logits.slice(0, 0, B).to(at::kFloat, false, /*copy=*/true));
    if (eos.defined()) {
      next = at::where(finished, at::full_like(next, opt.pad_token_id), next);
      finished = finished.logical_or(at::isin(next, eos));
    }
    tokens.select(1, i).copy_(next);
    n = i + 1;
    if (opt.on_token && !opt.on_token(n)) {
      cancelled = true;
      break;
    }
    if (n == opt.max_new_tokens) break;
    // The only host read of the loop, every eos_check_every steps.
    if (eos.defined() && n % std::max<int64_t>(1, opt.eos_check_every) == 0 && finished.all().item<bool>()) break;
    const at::Tensor feed = cfg ? at::cat({next, next}) : next;
    if (graph) {
      next = graph->run(feed);
      logits = graph->logits();
    } else {
      logits = step(feed);
      next = sampler.sample(logits);
    }
  }
  TokenLoopResult r;
  r.cancelled = cancelled;
  r.tokens = tokens.slice(1, 0, n);
  // Trailing all-pad columns after every row finished are dropped (host read, after the loop).
  if (eos.defined()) {
    at::Tensor is_eos = at::isin(r.tokens, eos).to(at::kLong).cumsum(1);
    // Column j is needed while some row has not finished before j.
    at::Tensor needed = (is_eos - at::isin(r.tokens, eos).to(at::kLong)).eq(0).any(0);
    const int64_t keep = needed.to(at::kLong).sum().item<int64_t>();
    r.tokens = r.tokens.slice(1, 0, keep);
    n = keep;
  }
  if (opt.keep_step_logits) r.step_logits = at::stack(std::vector<at::Tensor>(kept.begin(), kept.begin() + n), 1);
  return r;
}

}  // namespace omniflux::sampling
