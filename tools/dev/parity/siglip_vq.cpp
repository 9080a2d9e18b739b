// Parity case siglip_vq: the SigLIP-VQ quantizer (codes, exact) and decoder half (features) on
// given ViT features.
#include <ATen/ATen.h>

#include "omniflux/models/siglip_vq.h"
#include "nn/debug.h"
#include "parity.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(siglip_vq) {
  ParityOutputs out;
  omniflux::DebugScope taps([&](const std::string& name, const at::Tensor& t) { out[name] = t.detach().clone(); });
  auto vq = omniflux::SiglipVQ::load(ctx.file("weights"), ctx.rt, ctx.file("config"));
  at::Tensor grid = ctx.input("grid_hw");
  const int64_t h = grid[0].item<int64_t>(), w = grid[1].item<int64_t>();
  out["codes"] = vq.encode(ctx.input("features"), h, w);
  out["decoded_features"] = vq.decode(out["codes"], h, w).to(at::kFloat);
  return out;
}
