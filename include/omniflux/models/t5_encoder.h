#pragma once
// T5 encoder (transformers T5EncoderModel; v1.1 as FLUX's text_encoder_2): RMS-style layer norms,
// unscaled attention with a relative position bias computed once by block 0, gated tanh-GELU (or
// ReLU) feed-forward. Weights shared.weight + encoder.*.
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux {

// text_encoder_2/config.json; T5Config defaults.
struct T5Config {
  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  bool gated_gelu = false;  // feed_forward_proj "gated-gelu" (v1.1) vs "relu" (v1.0)

  static T5Config from_config(const Config& c);
};

class T5Encoder {
 public:
  T5Encoder(const T5Config& cfg, const WeightView& w);
  static T5Encoder load(const std::string& folder, const RuntimeOptions& rt = {});

  // ids [B, L] int64 -> last_hidden_state [B, L, d_model]. No attention mask (pads attend, as in
  // FluxPipeline). In half precision the `wo` projections and the residual stream stay float32
  // (transformers' _keep_in_fp32_modules = ["wo"]); the output is in the compute dtype.
  at::Tensor forward(const at::Tensor& input_ids) const;

  const T5Config& config() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// transformers T5Attention._relative_position_bucket: relative positions (key - query), int64,
// to bucket ids, with the log-spaced buckets computed in float32 as the reference does.
at::Tensor t5_relative_position_bucket(const at::Tensor& relative_position, bool bidirectional,
                                       int64_t num_buckets, int64_t max_distance);

}  // namespace omniflux
