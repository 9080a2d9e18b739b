#pragma once
// Qwen2ForCausalLM (Hugging Face transformers modeling_qwen2.py): RMSNorm, rotate-half RoPE with
// the config's rope_theta, GQA attention with q/k/v bias, SwiGLU MLP, tied or untied lm_head.
// Its DecoderLayer (private) is also the layer of the Qwen2.5-VL LM and of the X-Omni LM.
//
//   auto lm = Qwen2ForCausalLM::load("Qwen2.5-0.5B", rt);
//   auto cache = lm.new_cache(/*batch=*/1, /*capacity=*/512);
//   at::Tensor logits = lm.prefill(ids, cache);          // [B, V], last position
//   logits = lm.decode_one(next_ids, cache);              // [B, V]
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/kv_cache.h"
#include "omniflux/runtime.h"

namespace omniflux {

// Fields of config.json; defaults are Qwen2Config's (transformers configuration_qwen2.py).
struct Qwen2Config {
  int64_t vocab_size = 151936;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 22016;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 128;  // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 32768;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;

  // Reads and checks the fields (text fields of a Qwen2 / Qwen2.5-VL / X-Omni config).
  static Qwen2Config from_json(const omniflux::Config& json);
  // Qwen2.5-7B: hidden 3584, 28 layers, 28 heads, 4 kv heads, vocab 152064, theta 1e6.
  static Qwen2Config qwen2_5_7b();
};

// The decoder layers (src/models/qwen2_layers.h: DecoderLayer, made of nn/ blocks), which the
// models below hold behind a shared pointer: this header needs none of nn/, and copies stay cheap.
namespace qwen2 {
struct DecoderStack;
}

class Qwen2ForCausalLM {
 public:
  // A Hugging Face folder (config.json + safetensors, sharded or not). Strict: unknown keys fail.
  static Qwen2ForCausalLM load(const std::string& folder, const RuntimeOptions& rt = {});
  // Random weights of the given shape (benchmarks of full-size shapes without a download).
  static Qwen2ForCausalLM random(const Qwen2Config& cfg, const RuntimeOptions& rt = {}, uint64_t seed = 0);

  const Qwen2Config& config() const { return cfg_; }
  const RuntimeOptions& runtime() const { return rt_; }

  // A static cache for `batch` rows and at most `capacity` tokens (prompt + generated); under
  // tensor parallelism it holds this rank's key/value heads only.
  KVCache new_cache(int64_t batch, int64_t capacity) const;

  // Runs ids [B, S] as the next step of `cache` (the prompt, or a teacher-forced continuation).
  // attention_mask [B, S] (left padding, first step only) is optional. Returns the logits of the
  // last `logits_to_keep` positions, [B, logits_to_keep, V] (0 = all positions).
  at::Tensor prefill(const at::Tensor& ids, KVCache& cache, const at::Tensor& attention_mask = {},
                     int64_t logits_to_keep = 1) const;
  // One token per row, ids [B] (device tensor, never read back). Returns logits [B, V].
  at::Tensor decode_one(const at::Tensor& ids, KVCache& cache) const;
  // Full-sequence forward without a cache of the caller's: logits [B, S, V].
  at::Tensor forward(const at::Tensor& ids) const;

  // Pieces, for models built on this stack.
  at::Tensor embed(const at::Tensor& ids) const;
  // hidden [B, S, hidden] after the final norm for the step's tokens.
  at::Tensor hidden_states(const at::Tensor& ids, KVCache& cache, const at::Tensor& attention_mask = {}) const;
  at::Tensor lm_head(const at::Tensor& h) const;

 private:
  Qwen2Config cfg_;
  RuntimeOptions rt_;
  at::Tensor embed_tokens_, norm_, lm_head_, inv_freq_;
  std::shared_ptr<const qwen2::DecoderStack> layers_;
};

// Checks token ids [B, S] against a vocabulary (one host read: for prompts, not the token loop).
void check_token_ids(const at::Tensor& ids, int64_t vocab_size, const std::string& where);

}  // namespace omniflux
