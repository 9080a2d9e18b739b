// Parity case flux_transformer: one forward, and one with reference-image tokens appended.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/models/flux_dit.h"
#include "parity.h"
#include "taps.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(flux_transformer) {
  const auto folder = std::filesystem::path(ctx.file("weights")).parent_path().string();
  auto model = omniflux::FluxTransformer::load(folder, ctx.rt);
  omniflux::FluxDiTInputs in;
  in.hidden_states = ctx.input("hidden_states");
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
  full.hidden_states = at::cat({in.hidden_states, ctx.input("ref_hidden_states")}, 1);
  full.img_ids = at::cat({in.img_ids, ctx.input("ref_img_ids")}, 0);
  out["output_with_ref"] = model.forward(full);
  return out;
}
