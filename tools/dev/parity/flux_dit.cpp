// Parity case flux_transformer: one forward, and one with reference-image tokens appended.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/models/flux_dit.h"
#include "sampling/latents.h"
#include "parity.h"
#include "taps.h"

using omniflux::parity::ParityOutputs;

namespace {
// The fixture gives latents both unpacked (info) and packed: our packing of the one must be the other.
at::Tensor packed(const omniflux::parity::ParityContext& ctx, const char* unpacked, const char* packed_name) {
  at::Tensor p = omniflux::pack_latents(ctx.input(unpacked));
  at::Tensor ref = ctx.input(packed_name);
  if (!at::equal(p, ref))
    throw omniflux::Error("pack_latents of the fixture latents differs from its packed tokens", ctx.case_name + ": " + unpacked,
                          packed_name, "max abs diff " + std::to_string((p - ref).abs().max().item<double>()));
  return p;
}
}  // namespace

OMNIFLUX_PARITY_CASE(flux_transformer) {
  const auto folder = std::filesystem::path(ctx.file("weights")).parent_path().string();
  auto model = omniflux::FluxTransformer::load(folder, ctx.rt);
  omniflux::FluxDiTInputs in;
  in.hidden_states = packed(ctx, "latents_unpacked", "hidden_states");
  in.encoder_hidden_states = ctx.input("encoder_hidden_states");
  in.pooled_projections = ctx.input("pooled_projections");
  in.timestep = ctx.input("timestep");
  in.guidance = ctx.input("guidance");
  in.img_ids = ctx.input("img_ids");
  in.txt_ids = ctx.input("txt_ids");
  ParityOutputs out;
  {
    omniflux::parity::Taps taps;
    out["output"] = model.forward(in);
    taps.put_last(out, "inter_temb", "flux.temb");
    taps.put_stacked(out, "inter_double_block_img", "flux.double_block.img");
    taps.put_stacked(out, "inter_double_block_txt", "flux.double_block.txt");
    taps.put_stacked(out, "inter_single_block_outputs", "flux.single_block");
  }
  // The fixture keeps the reference tokens' own outputs: pass the concatenation as image tokens.
  omniflux::FluxDiTInputs full = in;
  full.hidden_states = at::cat({in.hidden_states, packed(ctx, "ref_latents_unpacked", "ref_hidden_states")}, 1);
  full.img_ids = at::cat({in.img_ids, ctx.input("ref_img_ids")}, 0);
  out["output_with_ref"] = model.forward(full);
  return out;
}
