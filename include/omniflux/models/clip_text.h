#pragma once
// CLIP text encoder (transformers CLIPTextModel), as FLUX uses it for its pooled embedding:
// token + position embeddings, pre-LN causal transformer with quick_gelu, final LayerNorm, and the
// hidden state at the EOS position. Weights text_model.* (no projection head).
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux {

// text_encoder/config.json (a CLIPTextConfig, or a CLIPConfig's text_config); CLIPTextConfig defaults.
struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // or "gelu"
  int64_t eos_token_id = 49407;  // 2 in the legacy configs (FLUX.1-dev): then pooling uses argmax(ids)

  static ClipTextConfig from_config(const Config& c);
};

struct ClipTextOutput {
  at::Tensor last_hidden_state;  // [B, L, hidden] after final_layer_norm
  at::Tensor pooler_output;      // [B, hidden], the row at pooled_index
  at::Tensor pooled_index;       // [B] int64
};

class ClipTextModel {
 public:
  ClipTextModel(const ClipTextConfig& cfg, const WeightView& w);  // w: the text_model.* level's parent
  static ClipTextModel load(const std::string& folder, const RuntimeOptions& rt = {});

  // ids [B, L] int64, L <= max_position_embeddings; no padding mask, causal only (as FluxPipeline).
  ClipTextOutput forward(const at::Tensor& input_ids) const;

  const ClipTextConfig& config() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// The EOS position per row, as transformers selects it: with the legacy eos_token_id == 2 the
// first position of the largest id; otherwise the first position equal to eos_token_id (position 0
// when a row has none, as argmax of an all-false row). ids [B, L] -> [B] int64.
at::Tensor clip_pooled_index(const at::Tensor& input_ids, int64_t eos_token_id);

}  // namespace omniflux
