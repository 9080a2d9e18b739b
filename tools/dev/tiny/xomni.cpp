// Tiny X-Omni folder in the official layout: config.json (XOmniConfig with vision_config),
// generation_config.json, the LM with routed adapter / head layers, the SigLIP ViT and VQ projector
// files named by vision_config.encoder, diffusers/ (a FLUX DiT plus the SigLIP injection Linear),
// and the real Qwen2 tokenizer.json extended with <SOM>, <EOM>, <IMAGE> and <MM-Token-k> at
// vocab_size + k. The decoder's text encoders and VAE come from the tiny FLUX.1-dev folder
// (omniflux-tiny writes both).


#include "omniflux/error.h"
#include "flux_weights.h"
#include "xomni_tokenizer.h"
#include "tiny.h"

using namespace omniflux::tiny;

namespace {

struct XOmniShape {
  // 4 query and 2 key/value heads: tensor parallelism over 2 and 4 ranks (tests/distributed).
  int64_t hidden = 32, inter = 64, layers = 4, heads = 4, kv = 2, adap = 1, head = 1;
  int64_t mm_vocab = 80, image_vocab = 64;
  // SigLIP-VQ
  int64_t vit_d = 32, vit_mlp = 64, vit_layers = 2, vit_heads = 2, patch = 16, pos_grid = 8, codebook_dim = 16;
};


}  // namespace

OMNIFLUX_TINY_MODEL(x_omni, "x-omni") {
  XOmniShape s;
  if (ctx.medium()) {
    s.hidden = 256, s.inter = 1024, s.layers = 8, s.heads = 4, s.kv = 2, s.adap = 2, s.head = 2;
    s.image_vocab = 1024, s.mm_vocab = 1040;
    s.vit_d = 256, s.vit_mlp = 512, s.vit_layers = 4, s.vit_heads = 4, s.pos_grid = 16, s.codebook_dim = 64;
  }
  std::filesystem::create_directories(ctx.dir);
  const int64_t V = write_xomni_tokenizer(ctx.tokenizers / "qwen2" / "tokenizer.json", ctx.dir / "tokenizer.json", s.image_vocab);  // the LM vocab_size
  const int64_t H = s.hidden, hd = s.hidden / s.heads;

  nlohmann::json vision = {
      {"dtype", "float32"},
      // Small any-resolution bounds so that chat images stay a few tokens.
      {"transform", {{"short_size", ctx.medium() ? 256 : 64}, {"long_size", ctx.medium() ? 512 : 128}, {"patch_size", s.patch}, {"random_ratio", nullptr},
                     {"min_short_size", 32}, {"max_aspect_ratio", 3.0}, {"filtering", true}}},
      {"encoder", {{"siglip_name", "tiny_siglip_patch16"}, {"siglip_path", "siglip_vit.safetensors"},
                   {"projector_path", "vq_projector.safetensors"}, {"z_channels", s.vit_d},
                   {"codebook_size", s.image_vocab}, {"codebook_dim", s.codebook_dim}, {"with_norm", true},
                   // Tiny ViT sizes (the real siglip2_giant_patch16_384 needs none).
                   {"siglip_config", {{"hidden_size", s.vit_d}, {"intermediate_size", s.vit_mlp},
                                      {"num_hidden_layers", s.vit_layers}, {"num_attention_heads", s.vit_heads},
                                      {"patch_size", s.patch}}}}},
      {"decoder", {{"model_path", "diffusers"}, {"upscale_factor", 16}, {"num_inference_steps", 2},
                   {"cfg_scale", 2.0}, {"cfg_scale_2", 1.5}}}};
  ctx.write_json("config.json",
                 {{"architectures", {"XOmniForCausalLM"}}, {"model_type", "x-omni"}, {"vocab_size", V},
                  {"hidden_size", H}, {"intermediate_size", s.inter}, {"num_hidden_layers", s.layers},
                  {"num_attention_heads", s.heads}, {"num_key_value_heads", s.kv}, {"hidden_act", "silu"},
                  {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0},
                  {"rope_scaling", nullptr}, {"tie_word_embeddings", false}, {"use_sliding_window", false},
                  {"bos_token_id", 151643}, {"eos_token_id", 151645}, {"torch_dtype", "float32"},
                  {"transformers_version", "4.51.3"}, {"num_mm_adap_layers", s.adap},
                  {"num_mm_head_layers", s.head}, {"mm_vocab_size", s.mm_vocab},
                  {"image_vocab_size", s.image_vocab}, {"mm_special_tokens", {"<SOM>", "<EOM>", "<IMAGE>"}},
                  {"vision_config", vision}});
  ctx.write_json("generation_config.json", {{"_from_model_config", true}, {"bos_token_id", 151643},
                                            {"eos_token_id", 151645}, {"transformers_version", "4.51.3"}});

  // The LM (modeling_xomni.py names).
  TinyWeights lm(ctx.seed * 8 + 1);
  lm.embedding("model.lm_embed_tokens.weight", V, H);
  lm.embedding("model.mm_embed_tokens.weight", s.mm_vocab, H);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    lm.norm(l + "input_layernorm", H, false);
    lm.linear(l + "self_attn.q_proj", H, H);
    lm.linear(l + "self_attn.k_proj", s.kv * hd, H);
    lm.linear(l + "self_attn.v_proj", s.kv * hd, H);
    lm.linear(l + "self_attn.o_proj", H, H, false);
    lm.norm(l + "post_attention_layernorm", H, false);
    lm.linear(l + "mlp.gate_proj", s.inter, H, false);
    lm.linear(l + "mlp.up_proj", s.inter, H, false);
    lm.linear(l + "mlp.down_proj", H, s.inter, false);
  }
  lm.norm("model.lm_norm", H, false);
  lm.norm("model.mm_norm", H, false);
  lm.linear("lm_head", V, H, false);
  lm.linear("mm_head", s.mm_vocab, H, false);
  lm.save(ctx.dir / "model.safetensors");

  // SigLIP ViT (timm names, fused qkv, no final norm) and the VQConvProjector.
  TinyWeights vit(ctx.seed * 8 + 2);
  const int64_t d = s.vit_d;
  vit.conv("patch_embed.proj", d, 3, s.patch);
  vit.matrix("pos_embed", {1, s.pos_grid * s.pos_grid, d}, 1.0);
  for (int64_t i = 0; i < s.vit_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    vit.norm(b + "norm1", d, true);
    vit.linear(b + "attn.qkv", 3 * d, d);
    vit.linear(b + "attn.proj", d, d);
    vit.norm(b + "norm2", d, true);
    vit.linear(b + "mlp.fc1", s.vit_mlp, d);
    vit.linear(b + "mlp.fc2", d, s.vit_mlp);
  }
  vit.save(ctx.dir / "siglip_vit.safetensors");
  TinyWeights vq(ctx.seed * 8 + 3);
  vq.conv("quant_conv", s.codebook_dim, d, 1);
  vq.embedding("quantize.embedding.weight", s.image_vocab, s.codebook_dim);
  vq.conv("post_quant_conv", d, s.codebook_dim, 1);
  for (int64_t i = 0; i < 2; ++i) {
    const std::string b = "post_conv." + std::to_string(i) + ".";
    vq.norm(b + "norm1", d, true);
    vq.conv(b + "conv1", d, d, 3);
    vq.norm(b + "norm2", d, true);
    vq.conv(b + "conv2", d, d, 3);
  }
  vq.save(ctx.dir / "vq_projector.safetensors");

  // diffusers/: the fine-tuned FLUX DiT (widths of the tiny FLUX.1-dev text encoders) plus the
  // SigLIP injection Linear z_channels -> inner_dim (bias-free, as in UniAR).
  FluxDitShape dit = ctx.medium() ? flux_dit_medium() : FluxDitShape{};
  dit.pooled = ctx.medium() ? clip_medium().hidden : ClipShape().hidden;
  dit.joint = ctx.medium() ? t5_medium().d : T5Shape().d;
  nlohmann::json dc = flux_dit_config(dit);
  dc["_class_name"] = "FluxTransformer2DModelWithSigLIP";
  dc["siglip_channels"] = d;
  ctx.write_json("diffusers/config.json", dc);
  TinyWeights wd(ctx.seed * 8 + 4);
  flux_dit_weights(wd, dit);
  wd.linear("siglip_embedder", dit.heads * dit.head_dim, d, false);
  wd.save(ctx.dir / "diffusers" / "diffusion_pytorch_model.safetensors");
}
