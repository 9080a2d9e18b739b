#pragma once
// Static KV cache (gpt-fast KVCache): per layer, k and v of [B, Hkv, capacity, D], allocated once
// for a batch and a maximum length, then written in place. A step writes its new k/v at
// [length, length + S) in every layer and then advances `length` (a host counter, so the token loop
// never reads device memory back).
//
// Rows of a batch may be left-padded (a CFG pair of prompts of different lengths, a padded batch):
// the first prefill then takes an attention mask, the cache keeps each row's pad count (on the host)
// and a per-row position delta (-pads), and every later step's attention skips each row's pads
// (AttentionOptions::key_start: no key mask, so CUDA keeps its flash kernel).
#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace omniflux {

namespace nn {
struct AttentionOptions;  // private (src/nn/attention.h): only the layers begin steps
}
namespace sampling {
class DecodeGraph;  // private (src/sampling/decode_graph.h): replays steps the host did not run
}

// Made by the LMs' new_cache (qwen2, qwen2_5_vl, xomni); passed to their prefill and decode_one.
class KVCache {
 public:
  KVCache() = default;
  KVCache(int64_t layers, int64_t batch, int64_t kv_heads, int64_t capacity, int64_t head_dim,
          at::TensorOptions options);

  int64_t layers() const { return static_cast<int64_t>(k_.size()); }
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // tokens written by completed steps
  int64_t bytes() const;                        // of the k and v buffers, all layers

  // begin_step, write and end_step are the models' own (a prefill or decode_one runs one step);
  // a program makes a cache with new_cache and may reset, rewind or skip it.
  // Starts a step of `new_tokens` tokens: checks the capacity and, for the first step only, takes
  // an optional left-padding mask [B, new_tokens] (nonzero = real token). Returns the attention
  // options the step's layers use: end-aligned causal, plus each row's first real key when rows
  // are padded.
  nn::AttentionOptions begin_step(int64_t new_tokens, const at::Tensor& attention_mask = {});
  // Writes k, v [B, Hkv, S, D] of `layer` at [length, length + S) and returns views of everything
  // written so far, [B, Hkv, length + S, D].
  std::pair<at::Tensor, at::Tensor> write(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  // Ends the step begun by begin_step: length += S.
  void end_step();
  // Forgets everything written (the memory stays allocated).
  void reset();
  // Forgets the tokens from `length` on, keeping the prefix (reuse of a prompt, benchmarks).
  void rewind(int64_t length);
  // Counts `n` more positions as written without writing them (their slots keep what they held):
  // dry runs and benchmarks of the last step of a long generation.
  void skip(int64_t n);

  // Fixed shapes, what decode graphs run on (docs/gpu.md §Decode graphs): from now on
  // the written length also lives in a device tensor, a step's keys are a view of a length rounded
  // up to a multiple of `bucket` (capped at the capacity) whose tail, and each row's pads, an
  // additive mask computed on the device from that tensor excludes, new k/v are written at the
  // device length (index_copy_) and positions() is computed from it. So a decode step's shapes
  // change only at bucket edges and none of its tensors depends on a host value but the bucket.
  // The host length stays in step. Outside a step only; bucket >= 1.
  void use_fixed_shapes(int64_t bucket);
  bool fixed_shapes() const { return bucket_ > 0; }
  // The key length the current step's views have (length + S, or its bucket in fixed shapes).
  int64_t view_length() const { return view_; }
  // The key length a next step of `new_tokens` would view (what a decode graph is captured for).
  int64_t next_view_length(int64_t new_tokens) const;

  // Positions of the current step's tokens, [B, S] int64 on the cache device:
  // length + i + position_delta[b] (HF: cumsum(attention_mask) - 1 for real tokens).
  at::Tensor positions() const;
  // Per-row offset added to the sequence index to get the rotary position, [B] int64: -pads for
  // left-padded rows; models with their own position scheme (M-RoPE rope_deltas) may set it.
  const at::Tensor& position_delta() const { return delta_; }
  void set_position_delta(const at::Tensor& delta);

 private:
  // A decode graph replays a step whose host side (these counters) ran once, at capture; it saves
  // and restores them, and counts each replayed step on the host (the device length is advanced
  // by the graph itself).
  friend class sampling::DecodeGraph;
  struct HostState {
    int64_t length, step, view;
    bool in_step;
  };
  HostState host_state() const { return {length_, step_, view_, in_step_}; }
  void set_host_state(const HostState& s);
  void count_replayed_step(int64_t new_tokens);

  std::vector<at::Tensor> k_, v_;
  std::vector<int64_t> key_start_;  // [B] pads per row, empty when no row is padded
  at::Tensor length_dev_;           // [1] int64, fixed shapes: the written length on the device
  at::Tensor key_start_dev_;        // [B] int64, fixed shapes: key_start_ (zeros when unpadded)
  at::Tensor write_at_;             // [S] int64, fixed shapes: the current step's slots
  int64_t bucket_ = 0, view_ = 0;
  void sync_length_dev();
  at::Tensor delta_;     // [B] int64
  int64_t batch_ = 0, capacity_ = 0, length_ = 0, step_ = 0;
  bool in_step_ = false;
};

}  // namespace omniflux
