#pragma once
// Random-weight FLUX.1-dev components in their checkpoint layouts: config.json contents and
// weights for a given shape. omniflux-tiny writes tiny ones; omniflux-bench builds full-size ones.
#include <cmath>
#include <string>
#include <vector>

#include "tiny.h"

namespace omniflux::tiny {

struct ClipShape {
  int64_t vocab = 49408, hidden = 32, inter = 64, layers = 2, heads = 2;
};
struct T5Shape {
  int64_t vocab = 32128, d = 32, kv = 8, heads = 4, ff = 64, layers = 2, buckets = 32;
};
// 4 heads so that sequence parallelism over 2 and 4 ranks applies (docs/distributed.md).
struct FluxDitShape {
  int64_t heads = 4, head_dim = 8, layers = 1, single = 1, joint = 32, pooled = 32, in = 64;
  std::vector<int64_t> axes = {2, 2, 4};
};
struct VaeShape {
  std::vector<int64_t> ch = {8, 8, 16, 16};
  int64_t groups = 4, lpb = 1, latent = 16, sample_size = 1024;
};
// FLUX.1-dev's own sizes.
inline ClipShape clip_l() { return {49408, 768, 3072, 12, 12}; }
inline T5Shape t5_xxl() { return {32128, 4096, 64, 64, 10240, 24, 32}; }
inline FluxDitShape flux_dev_dit() { return {24, 128, 19, 38, 4096, 768, 64, {16, 56, 56}}; }
inline VaeShape flux_dev_vae() { return {{128, 256, 512, 512}, 32, 2, 16, 1024}; }
// The medium preset (omniflux-tiny --preset medium): a DiT of about 230M parameters.
inline ClipShape clip_medium() { return {49408, 256, 1024, 4, 4}; }
inline T5Shape t5_medium() { return {32128, 512, 64, 8, 1024, 4, 32}; }
inline FluxDitShape flux_dit_medium() { return {12, 64, 6, 12, 512, 256, 64, {8, 28, 28}}; }
inline VaeShape vae_medium() { return {{32, 64, 128, 128}, 8, 1, 16, 1024}; }

inline nlohmann::json clip_config(const ClipShape& s) {
  return {{"architectures", {"CLIPTextModel"}}, {"model_type", "clip_text_model"}, {"vocab_size", s.vocab},
          {"hidden_size", s.hidden}, {"intermediate_size", s.inter}, {"num_hidden_layers", s.layers},
          {"num_attention_heads", s.heads}, {"max_position_embeddings", 77}, {"hidden_act", "quick_gelu"},
          {"layer_norm_eps", 1e-5}, {"projection_dim", s.hidden}, {"bos_token_id", 0},
          {"eos_token_id", 2}, {"pad_token_id", 1}, {"torch_dtype", "float32"}};
}

inline void clip_weights(TinyWeights& w, const ClipShape& s) {
  const std::string t = "text_model.";
  w.embedding(t + "embeddings.token_embedding.weight", s.vocab, s.hidden);
  w.embedding(t + "embeddings.position_embedding.weight", 77, s.hidden);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string l = t + "encoder.layers." + std::to_string(i) + ".";
    for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj"}) w.linear(l + "self_attn." + p, s.hidden, s.hidden);
    w.norm(l + "layer_norm1", s.hidden, true);
    w.norm(l + "layer_norm2", s.hidden, true);
    w.linear(l + "mlp.fc1", s.inter, s.hidden);
    w.linear(l + "mlp.fc2", s.hidden, s.inter);
  }
  w.norm(t + "final_layer_norm", s.hidden, true);
}

inline nlohmann::json t5_config(const T5Shape& s) {
  return {{"architectures", {"T5EncoderModel"}}, {"model_type", "t5"}, {"vocab_size", s.vocab}, {"d_model", s.d},
          {"d_kv", s.kv}, {"d_ff", s.ff}, {"num_layers", s.layers}, {"num_decoder_layers", s.layers},
          {"num_heads", s.heads}, {"relative_attention_num_buckets", s.buckets},
          {"relative_attention_max_distance", 128}, {"layer_norm_epsilon", 1e-6},
          {"feed_forward_proj", "gated-gelu"}, {"dense_act_fn", "gelu_new"}, {"is_gated_act", true},
          {"is_encoder_decoder", true}, {"tie_word_embeddings", false}, {"pad_token_id", 0},
          {"eos_token_id", 1}, {"decoder_start_token_id", 0}, {"torch_dtype", "float32"}};
}

inline void t5_weights(TinyWeights& w, const T5Shape& s) {
  const int64_t inner = s.heads * s.kv;
  w.embedding("shared.weight", s.vocab, s.d);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string b = "encoder.block." + std::to_string(i) + ".layer.";
    // q ~ N(0, 1/(d_model d_kv)): T5 does not scale its attention scores
    w.matrix(b + "0.SelfAttention.q.weight", {inner, s.d}, 1.0 / std::sqrt(double(s.d * s.kv)));
    w.matrix(b + "0.SelfAttention.k.weight", {inner, s.d});
    w.matrix(b + "0.SelfAttention.v.weight", {inner, s.d});
    w.matrix(b + "0.SelfAttention.o.weight", {s.d, inner});
    if (i == 0) w.embedding(b + "0.SelfAttention.relative_attention_bias.weight", s.buckets, s.heads);
    w.norm(b + "0.layer_norm", s.d, false);
    w.matrix(b + "1.DenseReluDense.wi_0.weight", {s.ff, s.d});
    w.matrix(b + "1.DenseReluDense.wi_1.weight", {s.ff, s.d});
    w.matrix(b + "1.DenseReluDense.wo.weight", {s.d, s.ff});
    w.norm(b + "1.layer_norm", s.d, false);
  }
  w.norm("encoder.final_layer_norm", s.d, false);
}

inline nlohmann::json flux_dit_config(const FluxDitShape& s) {
  return {{"_class_name", "FluxTransformer2DModel"}, {"_diffusers_version", "0.31.0"},
          {"attention_head_dim", s.head_dim}, {"axes_dims_rope", s.axes}, {"guidance_embeds", true},
          {"in_channels", s.in}, {"joint_attention_dim", s.joint}, {"num_attention_heads", s.heads},
          {"num_layers", s.layers}, {"num_single_layers", s.single}, {"patch_size", 1},
          {"pooled_projection_dim", s.pooled}};
}

inline void flux_dit_weights(TinyWeights& w, const FluxDitShape& s) {
  const int64_t dim = s.heads * s.head_dim, hd = s.head_dim, mlp = 4 * dim;
  w.linear("x_embedder", dim, s.in);
  w.linear("context_embedder", dim, s.joint);
  for (const char* e : {"timestep_embedder", "guidance_embedder"}) {
    w.linear(std::string("time_text_embed.") + e + ".linear_1", dim, 256);
    w.linear(std::string("time_text_embed.") + e + ".linear_2", dim, dim);
  }
  w.linear("time_text_embed.text_embedder.linear_1", dim, s.pooled);
  w.linear("time_text_embed.text_embedder.linear_2", dim, dim);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string b = "transformer_blocks." + std::to_string(i) + ".";
    w.linear(b + "norm1.linear", 6 * dim, dim);
    w.linear(b + "norm1_context.linear", 6 * dim, dim);
    for (const char* p : {"to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"})
      w.linear(b + "attn." + p, dim, dim);
    for (const char* p : {"norm_q", "norm_k", "norm_added_q", "norm_added_k"}) w.norm(b + "attn." + p, hd, false);
    for (const char* f : {"ff", "ff_context"}) {
      w.linear(b + f + ".net.0.proj", mlp, dim);
      w.linear(b + f + ".net.2", dim, mlp);
    }
  }
  for (int64_t i = 0; i < s.single; ++i) {
    const std::string b = "single_transformer_blocks." + std::to_string(i) + ".";
    w.linear(b + "norm.linear", 3 * dim, dim);
    for (const char* p : {"to_q", "to_k", "to_v"}) w.linear(b + "attn." + p, dim, dim);
    w.norm(b + "attn.norm_q", hd, false);
    w.norm(b + "attn.norm_k", hd, false);
    w.linear(b + "proj_mlp", mlp, dim);
    w.linear(b + "proj_out", dim, dim + mlp);
  }
  w.linear("norm_out.linear", 2 * dim, dim);
  w.linear("proj_out", s.in, dim);
}

inline nlohmann::json vae_config(const VaeShape& s) {
  return {{"_class_name", "AutoencoderKL"}, {"_diffusers_version", "0.31.0"}, {"act_fn", "silu"},
          {"block_out_channels", s.ch},
          {"down_block_types", std::vector<std::string>(s.ch.size(), "DownEncoderBlock2D")},
          {"up_block_types", std::vector<std::string>(s.ch.size(), "UpDecoderBlock2D")}, {"force_upcast", true},
          {"in_channels", 3}, {"out_channels", 3}, {"latent_channels", s.latent}, {"latents_mean", nullptr},
          {"latents_std", nullptr}, {"layers_per_block", s.lpb}, {"mid_block_add_attention", true},
          {"norm_num_groups", s.groups}, {"sample_size", s.sample_size}, {"scaling_factor", 0.3611},
          {"shift_factor", 0.1159}, {"use_post_quant_conv", false}, {"use_quant_conv", false}};
}

inline void vae_weights(TinyWeights& w, const VaeShape& s) {
  const auto& ch = s.ch;
  auto resnet = [&](const std::string& p, int64_t in, int64_t out) {
    w.norm(p + "norm1", in, true);
    w.conv(p + "conv1", out, in, 3);
    w.norm(p + "norm2", out, true);
    w.conv(p + "conv2", out, out, 3);
    if (in != out) w.conv(p + "conv_shortcut", out, in, 1);
  };
  auto mid = [&](const std::string& p, int64_t c) {
    resnet(p + "mid_block.resnets.0.", c, c);
    resnet(p + "mid_block.resnets.1.", c, c);
    w.norm(p + "mid_block.attentions.0.group_norm", c, true);
    for (const char* q : {"to_q", "to_k", "to_v", "to_out.0"}) w.linear(p + "mid_block.attentions.0." + q, c, c);
  };
  w.conv("encoder.conv_in", ch[0], 3, 3);
  for (size_t i = 0; i < ch.size(); ++i) {
    const std::string b = "encoder.down_blocks." + std::to_string(i) + ".";
    for (int64_t j = 0; j < s.lpb; ++j)
      resnet(b + "resnets." + std::to_string(j) + ".", j == 0 ? (i == 0 ? ch[0] : ch[i - 1]) : ch[i], ch[i]);
    if (i + 1 < ch.size()) w.conv(b + "downsamplers.0.conv", ch[i], ch[i], 3);
  }
  mid("encoder.", ch.back());
  w.norm("encoder.conv_norm_out", ch.back(), true);
  w.conv("encoder.conv_out", 2 * s.latent, ch.back(), 3);
  w.conv("decoder.conv_in", ch.back(), s.latent, 3);
  mid("decoder.", ch.back());
  const std::vector<int64_t> rev(ch.rbegin(), ch.rend());
  for (size_t i = 0; i < rev.size(); ++i) {
    const std::string b = "decoder.up_blocks." + std::to_string(i) + ".";
    for (int64_t j = 0; j < s.lpb + 1; ++j)
      resnet(b + "resnets." + std::to_string(j) + ".", j == 0 ? (i == 0 ? rev[0] : rev[i - 1]) : rev[i], rev[i]);
    if (i + 1 < rev.size()) w.conv(b + "upsamplers.0.conv", rev[i], rev[i], 3);
  }
  w.norm("decoder.conv_norm_out", ch[0], true);
  // small conv_out so that decoded images lie mostly inside [-1, 1] (as the flux_pipeline fixture)
  w.conv("decoder.conv_out", 3, ch[0], 3);
  w.matrix("decoder.conv_out.weight", {3, ch[0], 3, 3}, 0.025);
}

}  // namespace omniflux::tiny
