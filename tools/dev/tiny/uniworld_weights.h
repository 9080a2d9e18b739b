#pragma once
// Random-weight UniWorld-V1 and SigLIP2 folders in their release layouts (docs/models/uniworld.md §4):
// uniworld-v1/ (config.json in the UnivaQwen2p5VLConfig schema; model.safetensors with model.*,
// visual.*, lm_head.weight, denoise_tower.{denoiser, denoise_projector, siglip_projector,
// vae_projector}.*; the Qwen2 tokenizer; preprocessor_config.json; task_head_final.pt as
// torch.save writes it) and siglip2/ (a whole SiglipModel like google/siglip2-so400m-patch16-512).
// omniflux-tiny writes tiny ones; omniflux-bench builds small ones for its uniworld case.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "flux_weights.h"
#include "io/file_write.h"
#include "io/torch_pickle.h"
#include "tiny.h"

namespace omniflux::tiny {

struct QwenVlShape {
  int64_t vocab = 152064;  // every real Qwen2.5-VL tokenizer id must be valid
  // 4 query and 2 key/value heads: tensor parallelism over 2 and 4 ranks (tests/distributed).
  int64_t hidden = 32, inter = 64, layers = 2, heads = 4, kv = 2;
  std::vector<int64_t> mrope = {2, 1, 1};  // sums to head_dim / 2 (head_dim 8)
  int64_t v_depth = 2, v_hidden = 16, v_heads = 2, v_inter = 32, window = 112;
  std::vector<int64_t> fullatt = {1};
};
struct SiglipShape {
  int64_t hidden = 16, inter = 32, layers = 2, heads = 2, image = 64, patch = 16;
};
struct SiglipTextShape {  // the tiny folders' stub; the real so400m text tower is 256000 x 1152, 27 layers
  int64_t vocab = 64, hidden = 16, inter = 32, layers = 1, positions = 16, projection = 16;
};
struct UniWorldShape {
  QwenVlShape qwen;
  SiglipShape siglip;
  FluxDitShape dit;             // joint = projector output = T5 d_model; pooled = CLIP hidden
  int64_t task_head_hidden = 32;  // official 10240
};

inline nlohmann::json uniworld_config(const UniWorldShape& s) {
  const QwenVlShape& q = s.qwen;
  return {{"architectures", {"UnivaQwen2p5VLForConditionalGeneration"}},
          {"model_type", "univa_qwen2p5vl"},
          {"attention_dropout", 0.0},
          {"bos_token_id", 151643},
          {"eos_token_id", 151645},
          {"hidden_act", "silu"},
          {"hidden_size", q.hidden},
          {"intermediate_size", q.inter},
          {"num_hidden_layers", q.layers},
          {"num_attention_heads", q.heads},
          {"num_key_value_heads", q.kv},
          {"max_position_embeddings", 128000},
          {"max_window_layers", q.layers},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 1000000.0},
          {"rope_scaling", {{"mrope_section", q.mrope}, {"rope_type", "default"}, {"type", "default"}}},
          {"sliding_window", 32768},
          {"use_sliding_window", false},
          {"tie_word_embeddings", false},
          {"vocab_size", q.vocab},
          {"image_token_id", 151655},
          {"video_token_id", 151656},
          {"vision_start_token_id", 151652},
          {"vision_end_token_id", 151653},
          {"vision_token_id", 151654},
          {"image_begin_token_id", 151652},
          {"image_end_token_id", 151653},
          {"shortcut_image_embeds", false},
          {"torch_dtype", "float32"},
          {"transformers_version", "4.50.0"},
          {"vision_config",
           {{"depth", q.v_depth}, {"hidden_size", q.v_hidden}, {"num_heads", q.v_heads}, {"intermediate_size", q.v_inter},
            {"out_hidden_size", q.hidden}, {"patch_size", 14}, {"spatial_merge_size", 2}, {"temporal_patch_size", 2},
            {"window_size", q.window}, {"fullatt_block_indexes", q.fullatt}, {"hidden_act", "silu"},
            {"in_chans", 3}, {"tokens_per_second", 2}, {"model_type", "qwen2_5_vl"}}},
          {"denoise_tower",
           {{"model_type", "univa_denoise_tower"}, {"denoiser_type", "flux"}, {"denoise_projector_type", "mlp2x_gelu"},
            {"vae_projector_type", "mlp2x_gelu"}, {"input_hidden_size", q.hidden}, {"output_hidden_size", s.dit.joint},
            {"vae_input_hidden_size", 64}, {"denoiser_config", flux_dit_config(s.dit)}}}};
}

inline void qwen2_5_vl_weights(TinyWeights& w, const QwenVlShape& q) {
  const int64_t hd = q.hidden / q.heads;
  w.embedding("model.embed_tokens.weight", q.vocab, q.hidden);
  for (int64_t i = 0; i < q.layers; ++i) {
    const std::string b = "model.layers." + std::to_string(i) + ".";
    w.norm(b + "input_layernorm", q.hidden, false);
    w.norm(b + "post_attention_layernorm", q.hidden, false);
    w.linear(b + "self_attn.q_proj", q.heads * hd, q.hidden);
    w.linear(b + "self_attn.k_proj", q.kv * hd, q.hidden);
    w.linear(b + "self_attn.v_proj", q.kv * hd, q.hidden);
    w.linear(b + "self_attn.o_proj", q.hidden, q.heads * hd, false);
    w.linear(b + "mlp.gate_proj", q.inter, q.hidden, false);
    w.linear(b + "mlp.up_proj", q.inter, q.hidden, false);
    w.linear(b + "mlp.down_proj", q.hidden, q.inter, false);
  }
  w.norm("model.norm", q.hidden, false);
  w.linear("lm_head", q.vocab, q.hidden, false);
  const int64_t D = q.v_hidden, Dm = 4 * D;
  w.matrix("visual.patch_embed.proj.weight", {D, 3, 2, 14, 14});
  for (int64_t i = 0; i < q.v_depth; ++i) {
    const std::string b = "visual.blocks." + std::to_string(i) + ".";
    w.norm(b + "norm1", D, false);
    w.norm(b + "norm2", D, false);
    w.linear(b + "attn.qkv", 3 * D, D);
    w.linear(b + "attn.proj", D, D);
    w.linear(b + "mlp.gate_proj", q.v_inter, D);
    w.linear(b + "mlp.up_proj", q.v_inter, D);
    w.linear(b + "mlp.down_proj", D, q.v_inter);
  }
  w.norm("visual.merger.ln_q", D, false);
  w.linear("visual.merger.mlp.0", Dm, Dm);
  w.linear("visual.merger.mlp.2", q.hidden, Dm);
}

inline void uniworld_tower_weights(TinyWeights& w, const UniWorldShape& s) {
  const int64_t out = s.dit.joint;
  w.linear("denoise_tower.denoise_projector.0", 3 * out, s.qwen.hidden);
  w.linear("denoise_tower.denoise_projector.2", out, 3 * out);
  w.linear("denoise_tower.siglip_projector.0", 3 * out, s.siglip.hidden);
  w.linear("denoise_tower.siglip_projector.2", out, 3 * out);
  w.linear("denoise_tower.vae_projector.0", s.dit.heads * s.dit.head_dim, 64);  // unused at inference
  w.linear("denoise_tower.vae_projector.2", out, s.dit.heads * s.dit.head_dim);
  w.set_prefix("denoise_tower.denoiser.");
  flux_dit_weights(w, s.dit);
  w.set_prefix("");
}

inline void write_uniworld_folder(const std::filesystem::path& dir, const UniWorldShape& s, uint64_t seed,
                                  at::ScalarType dtype = at::kFloat) {
  std::filesystem::create_directories(dir);
  write_file_atomic((dir / "config.json").string(), uniworld_config(s).dump(2) + "\n");
  const nlohmann::json preprocessor = {
      {"image_processor_type", "Qwen2VLImageProcessor"}, {"processor_class", "Qwen2_5_VLProcessor"},
      {"do_convert_rgb", true}, {"do_normalize", true}, {"do_rescale", true}, {"do_resize", true},
      {"image_mean", {0.48145466, 0.4578275, 0.40821073}}, {"image_std", {0.26862954, 0.26130258, 0.27577711}},
      {"min_pixels", 3136}, {"max_pixels", 12845056}, {"merge_size", 2}, {"patch_size", 14}, {"resample", 3},
      {"rescale_factor", 1.0 / 255.0}, {"temporal_patch_size", 2},
      {"size", {{"shortest_edge", 3136}, {"longest_edge", 12845056}}}};
  write_file_atomic((dir / "preprocessor_config.json").string(), preprocessor.dump(2) + "\n");
  TinyWeights w(seed, dtype);
  qwen2_5_vl_weights(w, s.qwen);
  uniworld_tower_weights(w, s);
  w.save(dir / "model.safetensors");
  // app.py task_head: Linear(hidden, 10240), SiLU, Dropout, Linear(10240, 2) -> keys 0.*, 3.*
  TinyWeights h(seed + 7);
  h.linear("0", s.task_head_hidden, s.qwen.hidden);
  h.linear("3", 2, s.task_head_hidden);
  save_torch_state_dict((dir / "task_head_final.pt").string(), h.tensors());
}

// A whole SiglipModel's weights (vision tower with its MAP head, text tower, logit scalars).
inline void siglip_weights(TinyWeights& w, const SiglipShape& s, const SiglipTextShape& ts) {
  const int64_t d = s.hidden, n = (s.image / s.patch) * (s.image / s.patch);
  auto encoder = [&](const std::string& root, int64_t dim, int64_t inter, int64_t layers) {
    for (int64_t i = 0; i < layers; ++i) {
      const std::string b = root + "encoder.layers." + std::to_string(i) + ".";
      w.norm(b + "layer_norm1", dim, true);
      w.norm(b + "layer_norm2", dim, true);
      for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj"}) w.linear(b + "self_attn." + p, dim, dim);
      w.linear(b + "mlp.fc1", inter, dim);
      w.linear(b + "mlp.fc2", dim, inter);
    }
  };
  const std::string v = "vision_model.";
  w.conv(v + "embeddings.patch_embedding", d, 3, s.patch);
  w.embedding(v + "embeddings.position_embedding.weight", n, d);
  encoder(v, d, s.inter, s.layers);
  w.norm(v + "post_layernorm", d, true);
  // The MAP head (pooler_output): in the checkpoint, unused by UniWorld.
  w.normal(v + "head.probe", {1, 1, d}, 1.0);
  w.matrix(v + "head.attention.in_proj_weight", {3 * d, d});
  w.normal(v + "head.attention.in_proj_bias", {3 * d}, 0.02);
  w.linear(v + "head.attention.out_proj", d, d);
  w.norm(v + "head.layernorm", d, true);
  w.linear(v + "head.mlp.fc1", s.inter, d);
  w.linear(v + "head.mlp.fc2", d, s.inter);
  // The text tower (never run) and the contrastive scalars, as in a whole SiglipModel.
  const std::string t = "text_model.";
  w.embedding(t + "embeddings.token_embedding.weight", ts.vocab, ts.hidden);
  w.embedding(t + "embeddings.position_embedding.weight", ts.positions, ts.hidden);
  encoder(t, ts.hidden, ts.inter, ts.layers);
  w.norm(t + "final_layer_norm", ts.hidden, true);
  w.linear(t + "head", ts.projection, ts.hidden);
  w.normal("logit_scale", {1}, 1.0);
  w.normal("logit_bias", {1}, 1.0);
}

inline void write_siglip_folder(const std::filesystem::path& dir, const SiglipShape& s, uint64_t seed,
                                at::ScalarType dtype = at::kFloat) {
  std::filesystem::create_directories(dir);
  const nlohmann::json config = {
      {"architectures", {"SiglipModel"}}, {"model_type", "siglip"}, {"initializer_factor", 1.0},
      {"torch_dtype", "float32"},
      {"text_config",
       {{"hidden_size", 16}, {"intermediate_size", 32}, {"max_position_embeddings", 16},
        {"model_type", "siglip_text_model"}, {"num_attention_heads", 2}, {"num_hidden_layers", 1},
        {"projection_size", 16}, {"vocab_size", 64}}},
      {"vision_config",
       {{"hidden_size", s.hidden}, {"image_size", s.image}, {"intermediate_size", s.inter},
        {"model_type", "siglip_vision_model"}, {"num_attention_heads", s.heads}, {"num_hidden_layers", s.layers},
        {"patch_size", s.patch}}}};
  const nlohmann::json preprocessor = {
      {"image_processor_type", "SiglipImageProcessor"}, {"processor_class", "SiglipProcessor"},
      {"do_normalize", true}, {"do_rescale", true}, {"do_resize", true}, {"image_mean", {0.5, 0.5, 0.5}},
      {"image_std", {0.5, 0.5, 0.5}}, {"resample", 2}, {"rescale_factor", 1.0 / 255.0},
      {"size", {{"height", s.image}, {"width", s.image}}}};
  write_file_atomic((dir / "config.json").string(), config.dump(2) + "\n");
  write_file_atomic((dir / "preprocessor_config.json").string(), preprocessor.dump(2) + "\n");
  TinyWeights w(seed, dtype);
  siglip_weights(w, s, SiglipTextShape{});
  w.save(dir / "model.safetensors");
}

}  // namespace omniflux::tiny
