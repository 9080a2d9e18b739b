#pragma once
// UniWorld-V1 (docs/models/uniworld.md): Qwen2.5-VL reads the prompt (text first, then the reference
// images), its last hidden states and each image's SigLIP features go through the connectors into
// FLUX's text stream, T5 is appended (on by default), CLIP-L gives the pooled vector, and the
// fine-tuned FLUX DiT (denoise_tower.denoiser.*) denoises; the VAE decodes. The task head (or the
// caller) decides between an image and a text answer.
//
// Three folders: UniWorld-V1 (config.json, safetensors with model.* / visual.* / lm_head.* /
// denoise_tower.*, the Qwen2.5-VL tokenizer and preprocessor_config.json, task_head_final.pt),
// FLUX.1-dev (scheduler/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/,
// model_index.json; its transformer/ is not read) and SigLIP2 (google/siglip2-so400m-patch16-512).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/image.h"
#include "omniflux/models/qwen2_5_vl.h"
#include "omniflux/models/uniworld_connectors.h"
#include "omniflux/pipelines/chat.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/runtime.h"
#include "omniflux/text/tokenizer.h"

namespace omniflux {

constexpr int kUniWorldMaxImages = 4;
constexpr int64_t kUniWorldAnswerTokens = 128;  // app.py: max_new_tokens=128 (text answers and chat)

enum class UniWorldTask { Auto, Image, Text };
// "auto", "image" or "text"; anything else is an Error.
UniWorldTask parse_uniworld_task(const std::string& name);

// anyres_util.dynamic_resize(h, w, 'any_11ratio', anchor_pixels, stride=32) (uniworld.md §3.7): the
// ratio of the table closest to w/h (first on ties), scale = round(sqrt(anchor / (32rh * 32rw))),
// H = 32 rh scale, W = 32 rw scale. Returns (height, width).
std::pair<int64_t, int64_t> uniworld_dynamic_resize(int64_t height, int64_t width, int64_t anchor_pixels);

struct UniWorldOptions {
  std::string prompt;
  std::vector<Image> images;  // 0 .. kUniWorldMaxImages reference images
  // Output size. With reference images and snap_to_ratio (cli.py / eval), the size is
  // dynamic_resize(mean reference size, anchor = width * height); else width x height as given
  // (app.py). Both must be multiples of 16.
  int64_t width = 1024, height = 1024;
  bool snap_to_ratio = true;
  int64_t steps = 28;
  double guidance = 3.5;
  uint64_t seed = 42;
  bool use_t5 = true;                  // joint_with_t5 ("Enhance Current Turn")
  int64_t max_sequence_length = 256;   // T5 padding length
  UniWorldTask task = UniWorldTask::Auto;
  int64_t max_new_tokens = kUniWorldAnswerTokens;  // text answers
};

// What run() made: an image, or a text answer (task Text, or Auto routed to text).
using UniWorldResult = std::variant<Image, std::string>;

class UniWorldPipeline {
 public:
  static UniWorldPipeline load(const std::string& model_folder, const std::string& flux_folder,
                               const std::string& siglip_folder, const RuntimeOptions& rt = {});

  // --- Stages (each usable on its own) ---
  // uniworld.md §3.1: the Qwen2.5-VL template of one user turn (text, then one placeholder per image),
  // default system turn dropped.
  std::string chat_text(const std::string& prompt, int num_images) const;

  struct VlmPrompt {
    at::Tensor ids;                       // [1, L], image pads expanded
    Qwen2_5_VLPixels pixels;        // undefined tensors without images
    std::vector<at::Tensor> resized;      // qwen_vl_utils.fetch_image outputs, uint8 [H, W, 3]
  };
  // uniworld.md §3.2: fetch_image (smart_resize with min_pixels = max_pixels = qwen_pixels, PIL bicubic)
  // then the Qwen2VLImageProcessor with the same limits; then the chat text tokenised.
  VlmPrompt build_prompt(const std::string& prompt, const std::vector<Image>& images) const;
  // The same for a conversation (text::render_uniworld of the turns; images where their parts are).
  VlmPrompt build_chat_prompt(const std::vector<ChatTurn>& turns) const;
  // Qwen2.5-VL last_hidden_state (after the final norm) [1, L, hidden].
  at::Tensor vlm_hidden(const VlmPrompt& p) const;
  // SiglipImageProcessor + SiglipVisionModel last_hidden_state: pixels [n, 3, S, S] and
  // features [n, tokens, hidden].
  at::Tensor siglip_pixels(const std::vector<Image>& images) const;
  at::Tensor siglip_features(const at::Tensor& pixels) const;
  // CLIP ids [1, 77] and T5 ids [1, max_sequence_length] of the prompt (or of "" with T5 off).
  at::Tensor clip_ids(const std::string& text) const;
  at::Tensor t5_ids(const std::string& text, int64_t max_sequence_length) const;
  // uniworld.md §2.1: projectors, SigLIP splice, T5 appended when `t5` is defined.
  UniWorldTextStream assemble(const at::Tensor& ids, const at::Tensor& vlm_hidden, const at::Tensor& siglip_features,
                                const at::Tensor& t5) const;
  // uniworld.md §3.4: true when the task head routes to an image (hidden at the last `assistant` token).
  // Throws when the model folder has no task head.
  bool route_to_image(const at::Tensor& ids, const at::Tensor& vlm_hidden) const;
  bool has_task_head() const;

  // The whole request; nullopt when the progress callback cancelled. Progress stages: "vlm",
  // "siglip", "text_encoders", "denoise" (0..steps), "decode"; a text answer: "answer" per token.
  std::optional<UniWorldResult> run(const UniWorldOptions& opt, const ProgressCallback& progress = {}) const;
  // The output size run() uses for these options (after validation), as (height, width). Needs no
  // loaded model, so callers can check a snapped size before loading.
  static std::pair<int64_t, int64_t> output_size(const UniWorldOptions& opt);

  // A text answer to a conversation (system, user and assistant turns; up to kUniWorldMaxImages
  // images in all), by the VLM as app.py answers one turn: greedy unless the options sample,
  // ending at <|im_end|> or <|endoftext|>, special tokens skipped. The text streams through
  // `stream`; `progress` gets ("answer", tokens, max_new_tokens); nullopt when either cancelled.
  std::optional<ChatAnswer> chat(const std::vector<ChatTurn>& turns, const ChatOptions& options = {},
                                 const ChatStream& stream = {}, const ProgressCallback& progress = {}) const;

  // Components are handles, built on the device if offload had released them.
  Qwen2_5_VL vlm() const;
  const FluxPipeline& flux() const;
  const UniWorldConnectors& connectors() const;
  // Settings of this handle (copies keep their own; the loaded models are shared):
  // min_pixels = max_pixels of the Qwen image processor (app.py: 448^2), and what special-token
  // text inside a prompt becomes in the VLM prompt (default: text; docs/validation.md). CLIP and
  // T5 see the prompt as written either way.
  int64_t qwen_pixels() const { return qwen_pixels_; }
  void set_qwen_pixels(int64_t pixels);
  void set_prompt_special_tokens(text::PromptSpecialTokens mode) { special_tokens_ = mode; }
  text::PromptSpecialTokens prompt_special_tokens() const { return special_tokens_; }

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
  int64_t qwen_pixels_ = 448 * 448;
  text::PromptSpecialTokens special_tokens_ = text::PromptSpecialTokens::Text;
};

}  // namespace omniflux
