#pragma once
// Qwen2ForCausalLM (Hugging Face transformers modeling_qwen2.py): RMSNorm, rotate-half RoPE with
// the config's rope_theta, GQA attention with q/k/v bias, SwiGLU MLP, tied or untied lm_head.
// Its DecoderLayer is also the layer of the Qwen2.5-VL LM and of the X-Omni LM.
//
//   auto lm = qwen2::Qwen2ForCausalLM::load("Qwen2.5-0.5B", rt);
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
#include "nn/block_stack.h"
#include "nn/attention.h"
#include "nn/kv_cache.h"
#include "nn/layers.h"
#include "omniflux/runtime.h"

namespace omniflux {
class ProcessGroup;  // omniflux/distributed.h
}

namespace omniflux::qwen2 {

// Fields of config.json; defaults are Qwen2Config's (transformers configuration_qwen2.py).
struct Config {
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
  static Config from_json(const omniflux::Config& json);
  // Qwen2.5-7B: hidden 3584, 28 layers, 28 heads, 4 kv heads, vocab 152064, theta 1e6.
  static Config qwen2_5_7b();
};

// Tensor parallelism (Megatron-LM) over rt.parallel's tensor group of P ranks: what rank r keeps of
// each decoder layer. Query heads [r Hq/P, (r+1) Hq/P); the key/value heads serving them: Hkv/P
// each when P divides num_key_value_heads, else (P a multiple of it) the one head its query heads
// share, replicated as vLLM does; intermediate_size / P MLP columns. Embeddings, norms and the LM
// heads stay whole on every rank, and so do the vision towers of the models built on this stack.
struct TensorSplit {
  const ProcessGroup* group = nullptr;  // null: one rank, or tensor parallelism off
  int64_t rank = 0, size = 1;
  int64_t head_begin = 0, heads = 0;
  int64_t kv_begin = 0, kv_heads = 0;
  int64_t inter_begin = 0, inter = 0;
  // Throws Error naming the config field that P does not divide (`where`: the config's source).
  static TensorSplit of(const Config& cfg, const RuntimeOptions& rt, const std::string& where);
};
// The check alone, for an LM's load right after it reads its config (before any weight loads).
void check_tensor_parallel(const Config& cfg, const RuntimeOptions& rt, const std::string& where);

// One Qwen2DecoderLayer; q/k/v and gate/up are fused into one matrix each at load. Under tensor
// parallelism (TensorSplit) it holds this rank's slices: q/k/v and gate/up rows (column parallel),
// o_proj and down_proj columns (row parallel), each followed by one all-reduce (sum) of the
// [B, S, hidden] output before the residual add.
class DecoderLayer {
 public:
  // `w` is the layer's prefix (model.layers.{i}); the tensor group is its store's runtime's.
  static DecoderLayer load(const WeightView& w, const Config& cfg);
  // For benchmarks; always whole (no tensor parallelism).
  static DecoderLayer random(const Config& cfg, at::TensorOptions options);

  // x [B, S, hidden]; cos/sin [B, S, head_dim] (float32); writes this layer's post-RoPE k/v into
  // `cache` (inside a step begun by cache.begin_step, whose options are `attn`). Returns [B, S, hidden].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, nn::KVCache& cache,
                     int64_t layer, const nn::AttentionOptions& attn) const;

  // Every tensor the layer holds (moving a streamed layer between devices).
  template <class F>
  void for_each_tensor(F&& f) {
    f(input_norm_);
    f(post_norm_);
    qkv_.for_each_tensor(f);
    o_.for_each_tensor(f);
    gate_up_.for_each_tensor(f);
    down_.for_each_tensor(f);
  }

 private:
  at::Tensor input_norm_, post_norm_;   // [hidden]
  nn::Linear qkv_;                      // [(Hq + 2 Hkv) D, hidden] with bias
  nn::Linear o_;                        // [hidden, Hq D], no bias
  nn::Linear gate_up_, down_;           // [2 inter, hidden], [hidden, inter]
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0;  // this rank's heads
  double eps_ = 1e-6;
  std::shared_ptr<const Parallel> parallel_;  // keeps tp_ alive
  const ProcessGroup* tp_ = nullptr;          // the tensor group; null: whole layer here
};

class Qwen2ForCausalLM {
 public:
  // A Hugging Face folder (config.json + safetensors, sharded or not). Strict: unknown keys fail.
  static Qwen2ForCausalLM load(const std::string& folder, const RuntimeOptions& rt = {});
  // Random weights of the given shape (benchmarks of full-size shapes without a download).
  static Qwen2ForCausalLM random(const Config& cfg, const RuntimeOptions& rt = {}, uint64_t seed = 0);

  const Config& config() const { return cfg_; }
  const RuntimeOptions& runtime() const { return rt_; }

  // A static cache for `batch` rows and at most `capacity` tokens (prompt + generated); under
  // tensor parallelism it holds this rank's key/value heads only.
  nn::KVCache new_cache(int64_t batch, int64_t capacity) const;

  // Runs ids [B, S] as the next step of `cache` (the prompt, or a teacher-forced continuation).
  // attention_mask [B, S] (left padding, first step only) is optional. Returns the logits of the
  // last `logits_to_keep` positions, [B, logits_to_keep, V] (0 = all positions).
  at::Tensor prefill(const at::Tensor& ids, nn::KVCache& cache, const at::Tensor& attention_mask = {},
                     int64_t logits_to_keep = 1) const;
  // One token per row, ids [B] (device tensor, never read back). Returns logits [B, V].
  at::Tensor decode_one(const at::Tensor& ids, nn::KVCache& cache) const;
  // Full-sequence forward without a cache of the caller's: logits [B, S, V].
  at::Tensor forward(const at::Tensor& ids) const;

  // Pieces, for models built on this stack.
  at::Tensor embed(const at::Tensor& ids) const;
  // hidden [B, S, hidden] after the final norm for the step's tokens.
  at::Tensor hidden_states(const at::Tensor& ids, nn::KVCache& cache, const at::Tensor& attention_mask = {}) const;
  at::Tensor lm_head(const at::Tensor& h) const;

 private:
  Config cfg_;
  RuntimeOptions rt_;
  at::Tensor embed_tokens_, norm_, lm_head_, inv_freq_;
  nn::BlockStack<DecoderLayer> layers_;
};

// Checks token ids [B, S] against a vocabulary (one host read: for prompts, not the token loop).
void check_token_ids(const at::Tensor& ids, int64_t vocab_size, const std::string& where);

}  // namespace omniflux::qwen2
