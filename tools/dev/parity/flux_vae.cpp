// Parity case flux_vae: decode, and encode to the latent distribution.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/models/flux_vae.h"
#include "parity.h"
#include "taps.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(flux_vae) {
  const auto folder = std::filesystem::path(ctx.file("weights")).parent_path().string();
  auto vae = omniflux::FluxVae::load(folder, ctx.rt);
  ParityOutputs out;
  {
    omniflux::parity::Taps taps;
    out["image"] = vae.decode(ctx.input("latents"));
    taps.put_last(out, "inter_decoder_mid_block", "vae.decoder.mid_block");
    if (auto ups = taps.seen.find("vae.decoder.up_block"); ups != taps.seen.end())
      for (size_t i = 0; i < ups->second.size(); ++i) out["inter_decoder_up_block_" + std::to_string(i)] = ups->second[i];
  }
  omniflux::parity::Taps taps;
  auto dist = vae.encode(ctx.input("input_image"));
  taps.put_last(out, "inter_encoder_mid_block", "vae.encoder.mid_block");
  out["latent_mean"] = dist.mean;
  out["latent_logvar"] = dist.logvar;
  out["latent_mean_scaled"] = vae.scale_latents(dist.mean);
  return out;
}
