// Tiny UniWorld-V1 and SigLIP2 folders (the FLUX.1-dev one comes from flux.cpp; UniWorld reads
// its VAE, CLIP, T5, tokenizers and scheduler, not its transformer/). Widths tie together: the
// DiT's joint_attention_dim = projector output = the tiny T5 d_model, pooled_projection_dim = the
// tiny CLIP hidden size.
#include "tiny.h"
#include "uniworld_weights.h"

using namespace omniflux::tiny;

namespace {
SiglipShape siglip_shape(const TinyContext& ctx) {
  return ctx.medium() ? SiglipShape{256, 512, 4, 4, 256, 16} : SiglipShape{};
}
}  // namespace

OMNIFLUX_TINY_MODEL(uniworld_v1, "uniworld-v1") {
  UniWorldShape s;
  s.dit.joint = T5Shape{}.d;
  s.dit.pooled = ClipShape{}.hidden;
  if (ctx.medium()) {
    s.qwen.hidden = 256, s.qwen.inter = 1024, s.qwen.layers = 6, s.qwen.heads = 4, s.qwen.kv = 2;
    s.qwen.mrope = {8, 12, 12};  // head_dim 64
    s.qwen.v_depth = 4, s.qwen.v_hidden = 256, s.qwen.v_heads = 4, s.qwen.v_inter = 512, s.qwen.fullatt = {3};
    s.siglip = siglip_shape(ctx);
    s.dit = flux_dit_medium();
    s.dit.joint = t5_medium().d;
    s.dit.pooled = clip_medium().hidden;
    s.task_head_hidden = 256;
  }
  write_uniworld_folder(ctx.dir, s, ctx.seed * 4 + 11);
  ctx.copy_tokenizer("qwen2", ".", {"tokenizer.json"});
}

OMNIFLUX_TINY_MODEL(siglip2, "siglip2") { write_siglip_folder(ctx.dir, siglip_shape(ctx), ctx.seed * 4 + 12); }
