// Parity case t5_encoder: T5EncoderModel last hidden state and the relative position buckets.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/models/t5_encoder.h"
#include "parity.h"
#include "taps.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(t5_encoder) {
  const auto folder = std::filesystem::path(ctx.file("weights")).parent_path().string();
  auto model = omniflux::T5Encoder::load(folder, ctx.rt);
  ParityOutputs out;
  {
    omniflux::parity::Taps taps;
    out["last_hidden_state"] = model.forward(ctx.input("input_ids"));
    taps.put_last(out, "inter_embeddings", "t5.embeddings");
    taps.put_last(out, "inter_relative_position_bucket", "t5.relative_position_bucket");
    taps.put_last(out, "inter_position_bias", "t5.position_bias");
    taps.put_stacked(out, "inter_block_outputs", "t5.block");
  }
  const auto& c = model.config();
  out["relative_offset_buckets"] = omniflux::t5_relative_position_bucket(
      ctx.input("relative_offsets"), true, c.relative_attention_num_buckets, c.relative_attention_max_distance);
  return out;
}
