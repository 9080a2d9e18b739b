#pragma once
// The Qwen2 decoder layer and its tensor-parallel split, private to the library: the layers of
// Qwen2ForCausalLM, Qwen2_5_VL and XOmniLM (held through DecoderStack).
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "omniflux/models/qwen2.h"
#include "omniflux/runtime.h"
#include "nn/attention.h"
#include "nn/block_stack.h"
#include "nn/kv_cache.h"
#include "nn/layers.h"

namespace omniflux {
class ProcessGroup;  // omniflux/distributed.h
}

namespace omniflux::qwen2 {

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
  static TensorSplit of(const Qwen2Config& cfg, const RuntimeOptions& rt, const std::string& where);
};
// The check alone, for an LM's load right after it reads its config (before any weight loads).
void check_tensor_parallel(const Qwen2Config& cfg, const RuntimeOptions& rt, const std::string& where);

// One Qwen2DecoderLayer; q/k/v and gate/up are fused into one matrix each at load. Under tensor
// parallelism (TensorSplit) it holds this rank's slices: q/k/v and gate/up rows (column parallel),
// o_proj and down_proj columns (row parallel), each followed by one all-reduce (sum) of the
// [B, S, hidden] output before the residual add.
class DecoderLayer {
 public:
  // `w` is the layer's prefix (model.layers.{i}); the tensor group is its store's runtime's.
  static DecoderLayer load(const WeightView& w, const Qwen2Config& cfg);
  // For benchmarks; always whole (no tensor parallelism).
  static DecoderLayer random(const Qwen2Config& cfg, at::TensorOptions options);

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

struct DecoderStack {
  nn::BlockStack<DecoderLayer> layers;

  // The cfg.num_hidden_layers layers under `base` (model.layers), placed as rt.offload says.
  static std::shared_ptr<const DecoderStack> load(const WeightView& base, const Qwen2Config& cfg, const RuntimeOptions& rt);
};

}  // namespace omniflux::qwen2
