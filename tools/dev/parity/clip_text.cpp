// Parity case clip_text: last hidden state and pooled output of CLIPTextModel.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/models/clip_text.h"
#include "parity.h"
#include "taps.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(clip_text) {
  const auto folder = std::filesystem::path(ctx.file("weights")).parent_path().string();
  auto model = omniflux::ClipTextModel::load(folder, ctx.rt);
  omniflux::parity::Taps taps;
  auto r = model.forward(ctx.input("input_ids"));
  ParityOutputs out;
  out["last_hidden_state"] = r.last_hidden_state;
  out["pooler_output"] = r.pooler_output;
  out["pooled_index"] = r.pooled_index;
  taps.put_last(out, "inter_embeddings", "clip.embeddings");
  taps.put_stacked(out, "inter_layer_outputs", "clip.layer");
  return out;
}
