// Tiny FLUX.1-dev folder: the real layout (model_index.json, scheduler/, text_encoder/ CLIP-L,
// text_encoder_2/ T5 v1.1, tokenizer/, tokenizer_2/ with the real tokenizer files, transformer/,
// vae/), the real vocabularies, tiny widths and depths, random weights.
#include "flux_weights.h"
#include "tiny.h"

using namespace omniflux::tiny;

OMNIFLUX_TINY_MODEL(flux_1_dev, "flux.1-dev") {
  ctx.write_json("model_index.json",
                 {{"_class_name", "FluxPipeline"}, {"_diffusers_version", "0.31.0"},
                  {"scheduler", {"diffusers", "FlowMatchEulerDiscreteScheduler"}},
                  {"text_encoder", {"transformers", "CLIPTextModel"}},
                  {"text_encoder_2", {"transformers", "T5EncoderModel"}},
                  {"tokenizer", {"transformers", "CLIPTokenizer"}},
                  {"tokenizer_2", {"transformers", "T5TokenizerFast"}},
                  {"transformer", {"diffusers", "FluxTransformer2DModel"}}, {"vae", {"diffusers", "AutoencoderKL"}}});
  ctx.write_json("scheduler/scheduler_config.json",
                 {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"_diffusers_version", "0.31.0"},
                  {"base_image_seq_len", 256}, {"base_shift", 0.5}, {"max_image_seq_len", 4096}, {"max_shift", 1.15},
                  {"num_train_timesteps", 1000}, {"shift", 3.0}, {"use_dynamic_shifting", true}});
  ctx.copy_tokenizer("clip", "tokenizer", {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"});
  ctx.copy_tokenizer("t5", "tokenizer_2",
                     {"spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"});

  // Widths tie together: pooled_projection_dim = CLIP hidden, joint_attention_dim = T5 d_model.
  const ClipShape clip = ctx.medium() ? clip_medium() : ClipShape{};
  const T5Shape t5 = ctx.medium() ? t5_medium() : T5Shape{};
  FluxDitShape dit = ctx.medium() ? flux_dit_medium() : FluxDitShape{};
  dit.pooled = clip.hidden;
  dit.joint = t5.d;
  const VaeShape vae = ctx.medium() ? vae_medium() : VaeShape{};
  ctx.write_json("text_encoder/config.json", clip_config(clip));
  ctx.write_json("text_encoder_2/config.json", t5_config(t5));
  ctx.write_json("transformer/config.json", flux_dit_config(dit));
  ctx.write_json("vae/config.json", vae_config(vae));
  TinyWeights wc(ctx.seed * 4 + 1), wt(ctx.seed * 4 + 2), wd(ctx.seed * 4 + 3), wv(ctx.seed * 4 + 4);
  clip_weights(wc, clip);
  t5_weights(wt, t5);
  flux_dit_weights(wd, dit);
  vae_weights(wv, vae);
  wc.save(ctx.dir / "text_encoder" / "model.safetensors");
  wt.save(ctx.dir / "text_encoder_2" / "model.safetensors");
  wd.save(ctx.dir / "transformer" / "diffusion_pytorch_model.safetensors");
  wv.save(ctx.dir / "vae" / "diffusion_pytorch_model.safetensors");
}
