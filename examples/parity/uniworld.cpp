// Parity cases uniworld_conditioning (projectors + FLUX text-stream assembly) and
// uniworld_pipeline (UniWorld-V1 editing, stage by stage and from prompt + seed).
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/models/uniworld_connectors.h"
#include "parity.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(uniworld_conditioning) {
  const auto cfg = omniflux::Config::load(ctx.file("config"));
  const auto dt = cfg.sub("denoise_tower");
  auto store = omniflux::WeightStore::open(ctx.file("weights"), ctx.rt);
  auto conn = omniflux::uniworld::Connectors::load(store->root().sub("denoise_tower"), dt.get_int("input_hidden_size"),
                                                   dt.get_int("output_hidden_size"), dt.get_int("siglip_hidden_size", -1));
  store->finish();
  ParityOutputs out;
  at::Tensor e = conn.denoise_projector.forward(ctx.input("vlm_hidden"));
  at::Tensor s = conn.siglip_projector.forward(ctx.input("siglip_features"));
  auto ts = omniflux::uniworld::assemble_text_stream(ctx.input("input_ids"), e, s, ctx.input("t5_embeds"),
                                                     cfg.get_int("image_end_token_id"));
  out["prompt_embeds"] = ts.prompt_embeds;
  out["txt_ids"] = ts.txt_ids;
  out["inter_vision_end_positions"] = ts.vision_end_positions;
  out["inter_row_source"] = ts.row_source;
  out["inter_vlm_projected"] = e;
  out["inter_siglip_projected"] = s;
  return out;
}
