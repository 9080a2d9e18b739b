// Parity case siglip2_vision: the NaFlex SigLIP2 vision model (with its pooling head) on the
// reference processor outputs.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/models/siglip2.h"
#include "omniflux/nn/debug.h"
#include "parity.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(siglip2_vision) {
  ParityOutputs out;
  omniflux::DebugScope taps([&](const std::string& name, const at::Tensor& t) { out[name] = t.detach().clone(); });
  const std::string folder = std::filesystem::path(ctx.file("weights")).parent_path().string();
  auto model = omniflux::Siglip2VisionModel::load(folder, ctx.rt, /*with_head=*/true);
  auto r = model.forward(ctx.input("pixel_values"), ctx.input("pixel_attention_mask"), ctx.input("spatial_shapes"));
  out["last_hidden_state"] = r.last_hidden_state.to(at::kFloat);
  out["pooler_output"] = r.pooler_output.to(at::kFloat);
  return out;
}
