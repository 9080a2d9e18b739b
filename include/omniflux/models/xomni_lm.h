#pragma once
// The X-Omni autoregressive LM (XOmniForCausalLM, HF remote code modeling_xomni.py): a Qwen2 stack
// whose first num_mm_adap_layers and last num_mm_head_layers layers update only image-token
// positions (text positions keep their state but still give K/V), two embeddings and two final
// norms chosen per position by token type, and two heads chosen by the generation mode.
// One id space: ids < vocab_size are text, id vocab_size + k is image code k.
//
//   auto lm = XOmniLM::load(dir, rt);
//   at::Tensor codes = lm.generate_image_codes(prompt_ids, negative_ids, 72 * 72, opts);
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/kv_cache.h"
#include "omniflux/progress.h"
#include "omniflux/models/qwen2.h"
#include "omniflux/runtime.h"
#include "omniflux/sampling/token_sampling.h"
#include "omniflux/text/tokenizer.h"

namespace omniflux {

struct XOmniLMConfig {
  Qwen2Config text;              // the Qwen2 fields; text.vocab_size is the text vocabulary
  int64_t num_mm_adap_layers = 4;  // defaults: XOmniConfig (configuration_xomni.py)
  int64_t num_mm_head_layers = 4;
  int64_t mm_vocab_size = 16448;
  int64_t image_vocab_size = 16384;
  std::vector<std::string> mm_special_tokens = {"<SOM>", "<EOM>", "<IMAGE>"};

  static XOmniLMConfig from_json(const omniflux::Config& json);
  // Layers [adap, N - head) update every token; the others only image tokens.
  bool routed(int64_t layer) const {
    return layer < num_mm_adap_layers || layer >= text.num_hidden_layers - num_mm_head_layers;
  }
};

enum class XOmniMode { Text, Image };

class XOmniLM {
 public:
  // A folder with config.json and the LM safetensors. When the folder holds a tokenizer.json, it
  // is loaded and the image-code ids are checked against it (check_image_token_ids).
  static XOmniLM load(const std::string& folder, const RuntimeOptions& rt = {});
  // The config (and tokenizer check) from `folder`, the weights from `store` (a checkpoint held in
  // memory: random-weight benchmarks). The store must hold nothing else.
  static XOmniLM load(const std::string& folder, WeightStore& store, const RuntimeOptions& rt = {});

  const XOmniLMConfig& config() const { return cfg_; }
  const RuntimeOptions& runtime() const { return rt_; }
  KVCache new_cache(int64_t batch, int64_t capacity) const;

  // Runs ids [B, S] (text and image ids mixed) as the next step of `cache` and returns the hidden
  // states after the token-type final norm, [B, S, hidden]. attention_mask: left padding, first
  // step only.
  at::Tensor hidden_states(const at::Tensor& ids, KVCache& cache, const at::Tensor& attention_mask = {}) const;
  // Text mode: lm_head, [..., vocab_size], column j = id j. Image mode: the first image_vocab_size
  // rows of mm_head, [..., image_vocab_size], column k = id vocab_size + k. (The reference fills
  // the other ids of its full-width logits with finfo.min, which no softmax or argmax picks.)
  at::Tensor logits(const at::Tensor& hidden, XOmniMode mode) const;
  int64_t token_offset(XOmniMode mode) const { return mode == XOmniMode::Image ? cfg_.text.vocab_size : 0; }

  // prefill: checks the ids, returns logits of the last `logits_to_keep` positions (0 = all).
  at::Tensor prefill(const at::Tensor& ids, KVCache& cache, XOmniMode mode, const at::Tensor& attention_mask = {},
                     int64_t logits_to_keep = 1) const;
  // ids [B] (absolute ids, on the device); returns logits [B, V_mode].
  at::Tensor decode_one(const at::Tensor& ids, KVCache& cache, XOmniMode mode) const;

  // Text-to-image token generation as X-Omni's generate.py: `prompt_ids` [1, L] ends with
  // "<SOM>h w<IMAGE>"; with guidance_scale != 1, `negative_ids` [1, L2] (the tokens of that
  // prefix) run as a second, left-padded row of the same cache, fed the conditional row's tokens.
  // Returns the codes k (0 <= k < image_vocab_size), [1, n_codes], or [1, done] with done < n_codes
  // when `progress` cancelled.
  struct ImageGeneration {
    sampling::SamplingOptions sampling = xomni_defaults();
    double guidance_scale = 1.0;
    // ("tokens", codes sampled so far, n_codes) after each sampled code; false cancels before the
    // next decode step (omniflux/progress.h).
    ProgressCallback progress;
    // generate.py: do_sample, temperature 1, top_p 1, min_p 0.03; top_k is GenerationConfig's 50.
    // Inline: the server's request validation reads these defaults without linking the library.
    static sampling::SamplingOptions xomni_defaults() {
      sampling::SamplingOptions s;
      s.do_sample = true;
      s.top_k = 50;
      s.min_p = 0.03;
      return s;
    }
  };
  at::Tensor generate_image_codes(const at::Tensor& prompt_ids, const at::Tensor& negative_ids, int64_t n_codes,
                                  const ImageGeneration& opt) const;
  // The batch generate_image_codes prefills with CFG in one process: rows [cond; uncond], each
  // left-padded to the longer one, and the attention mask (0 on the pads), where prompt_ids are.
  std::pair<at::Tensor, at::Tensor> cfg_rows(const at::Tensor& prompt_ids, const at::Tensor& negative_ids) const;

  // Checks that "<MM-Token-k>" is id vocab_size + k (k = 0, 1 and image_vocab_size - 1) with the
  // tokenizer's lookup; throws Error naming the token otherwise.
  void check_image_token_ids(const std::function<std::optional<int64_t>(const std::string&)>& token_to_id) const;
  void check_image_token_ids(const text::Tokenizer& tokenizer) const;

 private:
  XOmniLMConfig cfg_;
  RuntimeOptions rt_;
  at::Tensor lm_embed_, mm_embed_, lm_norm_, mm_norm_, lm_head_, image_head_, inv_freq_;
  std::shared_ptr<const qwen2::DecoderStack> layers_;
};

}  // namespace omniflux
