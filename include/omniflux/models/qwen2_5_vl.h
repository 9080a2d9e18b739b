#pragma once
// Qwen2.5-VL (transformers 4.50/4.51 modeling_qwen2_5_vl.py, image_processing_qwen2_vl.py):
// the image preprocessor, the windowed ViT with its PatchMerger, get_rope_index (M-RoPE positions
// and rope_deltas), and the Qwen2 LM with <|image_pad|> embeddings replaced by vision features.
// Images only (no video).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/image.h"
#include "omniflux/io/weights.h"
#include "omniflux/kv_cache.h"
#include "omniflux/models/qwen2.h"
#include "omniflux/runtime.h"
#include "omniflux/sampling/token_sampling.h"
#include "omniflux/text/tokenizer.h"

namespace omniflux {

// --- Image preprocessing (Qwen2VLImageProcessor, the slow PIL path) ---------------------------

struct Qwen2_5_VLPreprocessorConfig {  // defaults: the class defaults; checkpoints override max_pixels
  int64_t min_pixels = 56 * 56;
  int64_t max_pixels = 28 * 28 * 1280;
  int64_t patch_size = 14;
  int64_t temporal_patch_size = 2;
  int64_t merge_size = 2;
  double rescale_factor = 1.0 / 255.0;
  std::vector<double> image_mean = {0.48145466, 0.4578275, 0.40821073};
  std::vector<double> image_std = {0.26862954, 0.26130258, 0.27577711};

  // preprocessor_config.json (a file, or a folder holding it).
  static Qwen2_5_VLPreprocessorConfig load(const std::string& path);
  static Qwen2_5_VLPreprocessorConfig from_json(const omniflux::Config& json);
};

// Target (height, width), multiples of `factor`, with min_pixels <= h * w <= max_pixels; Python's
// round-half-to-even as the reference. Throws Error for an aspect ratio above 200 or a zero size.
std::pair<int64_t, int64_t> qwen2_5_vl_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                         int64_t max_pixels);

struct Qwen2_5_VLPixels {
  at::Tensor pixel_values;  // [sum(t * gh * gw), C * T * P * P] float32
  at::Tensor grid_thw;      // [n_images, 3] int64, in patches
};

// Rescales, normalises, repeats to temporal_patch_size frames and flattens already-resized images
// (uint8 [H, W, 3], H and W multiples of patch * merge) in the processor's patch order.
Qwen2_5_VLPixels qwen2_5_vl_patchify(const std::vector<at::Tensor>& resized_rgb, const Qwen2_5_VLPreprocessorConfig& cfg);

// The whole processor: smart_resize (factor patch * merge), PIL-exact bicubic resize of the uint8
// image, then patchify. `resized` (optional) receives the resized images as uint8 [H, W, 3].
Qwen2_5_VLPixels qwen2_5_vl_preprocess(const std::vector<Image>& images, const Qwen2_5_VLPreprocessorConfig& cfg,
                      std::vector<at::Tensor>* resized = nullptr);

// --- Model ------------------------------------------------------------------------------------

struct Qwen2_5_VLVisionConfig {  // defaults: Qwen2_5_VLVisionConfig
  int64_t depth = 32;
  int64_t hidden_size = 3584;
  int64_t intermediate_size = 3420;
  int64_t num_heads = 16;
  int64_t in_channels = 3;
  int64_t out_hidden_size = 3584;
  int64_t patch_size = 14;
  int64_t spatial_merge_size = 2;
  int64_t temporal_patch_size = 2;
  int64_t window_size = 112;
  std::vector<int64_t> fullatt_block_indexes = {7, 15, 23, 31};

  static Qwen2_5_VLVisionConfig from_json(const omniflux::Config& json);
};

struct Qwen2_5_VLConfig {
  Qwen2Config text;
  Qwen2_5_VLVisionConfig vision;
  std::vector<int64_t> mrope_section;
  int64_t image_token_id = 151655, video_token_id = 151656, vision_start_token_id = 151652;
  int64_t eos_token_id = 151645;

  static Qwen2_5_VLConfig from_json(const omniflux::Config& json);
};

// Window attention layout of the ViT (get_window_index).
struct Qwen2_5_VLWindowIndex {
  at::Tensor window_index;       // [N / merge^2] int64: merged-token order inside windows
  at::Tensor cu_window_seqlens;  // [W + 1] int64, in patches, after unique_consecutive
};
Qwen2_5_VLWindowIndex qwen2_5_vl_window_index(const at::Tensor& grid_thw, const Qwen2_5_VLVisionConfig& cfg);

struct Qwen2_5_VLRopeIndex {
  at::Tensor position_ids;  // [3, B, L] int64
  at::Tensor rope_deltas;   // [B, 1] int64
};
// M-RoPE positions of a prompt (get_rope_index): text advances by 1 per token, an image takes
// (t, h, w) grid positions and advances by max(h, w) / merge. Left-padded rows (attention_mask 0)
// get position 1 at the pads.
Qwen2_5_VLRopeIndex qwen2_5_vl_rope_index(const at::Tensor& input_ids, const at::Tensor& image_grid_thw, const Qwen2_5_VLConfig& cfg,
                         const at::Tensor& attention_mask = {});

class Qwen2_5_VLVisionTower {
 public:
  static Qwen2_5_VLVisionTower load(const WeightView& w, const Qwen2_5_VLVisionConfig& cfg);
  // pixel_values [N, C*T*P*P], grid_thw [n, 3] -> merged features [N / merge^2, out_hidden] in
  // the processor's (un-windowed) order.
  at::Tensor forward(const at::Tensor& pixel_values, const at::Tensor& grid_thw) const;

 private:
  struct Block;  // src/models/qwen2_5_vl.cpp; shared, immutable after load
  Qwen2_5_VLVisionConfig cfg_;
  at::Tensor patch_w_;  // [hidden, C*T*P*P] (the Conv3d kernel flattened)
  std::shared_ptr<const std::vector<Block>> blocks_;
  at::Tensor ln_q_, mlp0_w_, mlp0_b_, mlp2_w_, mlp2_b_;
};

class Qwen2_5_VL {
 public:
  // A Hugging Face folder: config.json, safetensors (hub layout visual.* / model.* / lm_head, or the
  // 4.52+ layout model.visual.* / model.language_model.*), optionally preprocessor_config.json.
  static Qwen2_5_VL load(const std::string& folder, const RuntimeOptions& rt = {});
  // The config (and tokenizer, preprocessor) from `folder`, the weights from `store` in the hub
  // layout (visual.*, model.*, lm_head.*) for checkpoints that hold more (UniWorld-V1's
  // denoise_tower.*). The caller calls store.finish().
  static Qwen2_5_VL load(const std::string& folder, WeightStore& store, const RuntimeOptions& rt = {});

  const Qwen2_5_VLConfig& config() const { return cfg_; }
  const RuntimeOptions& runtime() const { return rt_; }
  const Qwen2_5_VLPreprocessorConfig& preprocessor() const { return pre_; }
  const Qwen2_5_VLVisionTower& visual() const { return visual_; }
  KVCache new_cache(int64_t batch, int64_t capacity) const;

  // The prompt step: ids [B, L] with t*gh*gw/merge^2 <|image_pad|> per image, pixel values and
  // grids from the preprocessor (undefined when there is no image). Stores rope_deltas in the
  // cache for decode_one. Returns logits of the last `logits_to_keep` positions (0 = all).
  at::Tensor prefill(const at::Tensor& ids, const at::Tensor& pixel_values, const at::Tensor& grid_thw,
                     KVCache& cache, const at::Tensor& attention_mask = {}, int64_t logits_to_keep = 1) const;
  // As prefill, but returns the last hidden states [B, L, hidden] after the final RMSNorm
  // (hidden_states[-1]) instead of logits.
  at::Tensor prefill_hidden(const at::Tensor& ids, const at::Tensor& pixel_values, const at::Tensor& grid_thw,
                            KVCache& cache, const at::Tensor& attention_mask = {}) const;
  // The logits of hidden states (lm_head).
  at::Tensor logits(const at::Tensor& hidden) const;
  // ids [B] on the device; position = sequence index + rope_delta on all three rows.
  at::Tensor decode_one(const at::Tensor& ids, KVCache& cache) const;

  // Greedy (or sampled) continuation of a tokenised prompt, stopping at eos_token_id.
  at::Tensor generate(const at::Tensor& ids, const at::Tensor& pixel_values, const at::Tensor& grid_thw,
                      sampling::TokenLoopOptions opt) const;

  // --- Chat (needs a tokenizer: the folder's tokenizer.json, or set_tokenizer) ---
  // Checks that the tokenizer's <|image_pad|> is config.image_token_id.
  void set_tokenizer(std::shared_ptr<const text::Tokenizer> tokenizer);
  const text::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // What special-token text inside a question becomes (default: text; docs/validation.md).
  void set_prompt_special_tokens(text::PromptSpecialTokens mode) { special_tokens_ = mode; }
  text::PromptSpecialTokens prompt_special_tokens() const { return special_tokens_; }
  std::shared_ptr<const text::Tokenizer> shared_tokenizer() const { return tokenizer_; }

  struct Prompt {
    at::Tensor ids;  // [1, L] with the image pads expanded
    Qwen2_5_VLPixels pixels;
  };
  // One user turn of the Qwen2.5-VL chat template: the images, then the question; tokenised, the
  // k-th <|image_pad|> repeated t*gh*gw / merge^2 times, and the images preprocessed.
  Prompt build_prompt(const std::vector<Image>& images, const std::string& question) const;

  struct AnswerOptions {
    int64_t max_new_tokens = 256;
    sampling::SamplingOptions sampling;  // greedy unless sampling.do_sample
  };
  // The assistant's reply, decoded without special tokens; stops at <|im_end|> (or <|endoftext|>).
  std::string answer(const std::vector<Image>& images, const std::string& question, const AnswerOptions& opt) const;
  std::string answer(const std::vector<Image>& images, const std::string& question) const {
    return answer(images, question, AnswerOptions{});
  }

 private:
  Qwen2_5_VLConfig cfg_;
  Qwen2_5_VLPreprocessorConfig pre_;
  RuntimeOptions rt_;
  Qwen2_5_VLVisionTower visual_;
  at::Tensor embed_tokens_, norm_, lm_head_, inv_freq_;
  std::shared_ptr<const qwen2::DecoderStack> layers_;
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  text::PromptSpecialTokens special_tokens_ = text::PromptSpecialTokens::Text;
};

}  // namespace omniflux
