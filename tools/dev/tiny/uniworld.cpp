// Tiny UniWorld-V1 and SigLIP2 folders (the FLUX.1-dev one comes from flux.cpp; UniWorld reads
// its VAE, CLIP, T5, tokenizers and scheduler, not its transformer/). Widths tie together: the
// DiT's joint_attention_dim = projector output = the tiny T5 d_model, pooled_projection_dim = the
// tiny CLIP hidden size.
#include "tiny.h"
#include "uniworld_weights.h"

using namespace omniflux::tiny;

OMNIFLUX_TINY_MODEL(uniworld_v1, "uniworld-v1") {
  UniWorldShape s;
  s.dit.joint = T5Shape{}.d;
  s.dit.pooled = ClipShape{}.hidden;
  write_uniworld_folder(ctx.dir, s, ctx.seed * 4 + 11);
  ctx.copy_tokenizer("qwen2", ".", {"tokenizer.json"});
}

OMNIFLUX_TINY_MODEL(siglip2, "siglip2") { write_siglip_folder(ctx.dir, SiglipShape{}, ctx.seed * 4 + 12); }
