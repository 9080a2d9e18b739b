#pragma once
// A conversation for the models that answer in text (UniWorld-V1's Qwen2.5-VL, X-Omni), and how
// the answer is sampled. Each pipeline renders the turns through its own chat template.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "omniflux/io/image.h"
#include "omniflux/progress.h"
#include "omniflux/sampling/text_generation.h"

namespace omniflux {

struct ChatPart {
  bool is_image = false;
  std::string text;  // when !is_image
  Image image;       // when is_image

  static ChatPart make_text(std::string t) { return {false, std::move(t), {}}; }
  static ChatPart make_image(Image im) { return {true, {}, std::move(im)}; }
};

struct ChatTurn {
  std::string role;  // "system", "user" or "assistant"
  std::vector<ChatPart> parts;

  static ChatTurn text(std::string role, std::string t) { return {std::move(role), {ChatPart::make_text(std::move(t))}}; }
};

// Unset fields keep the official chat code's behaviour (greedy; X-Omni with its generation
// config's repetition penalty). temperature 0 is greedy; a temperature > 0, or top_p/top_k/min_p
// without a temperature (which is then 1), samples.
struct ChatOptions {
  int64_t max_new_tokens = 0;  // 0: the pipeline's (kUniWorldAnswerTokens 128, app.py; kXOmniAnswerTokens 512, chat.py)
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  double presence_penalty = 0, frequency_penalty = 0;  // OpenAI's definitions (text_generation.h)
  std::vector<std::pair<int64_t, double>> logit_bias;
  std::vector<std::string> stop;
  uint64_t seed = 0;
};

struct ChatAnswer {
  std::string text;
  int64_t prompt_tokens = 0;      // the rendered conversation, image tokens included
  int64_t completion_tokens = 0;  // sampled, the end token included
  sampling::FinishReason finish = sampling::FinishReason::Stop;  // Length when max_new_tokens cut it
};

// Streamed answer text in complete UTF-8 pieces; returning false cancels within one token.
using ChatStream = sampling::TextPieceCallback;

// The sampling of a ChatOptions on top of a model's defaults (see ChatOptions). `progress`, when
// set, gets ("answer", tokens so far, max_new_tokens) after each sampled token; false cancels
// (within one token, also while the stream holds text back).
sampling::TextGenerationOptions chat_generation_options(const ChatOptions& o, int64_t default_max_new_tokens,
                                                        double default_repetition_penalty = 1.0,
                                                        const ProgressCallback& progress = {});

// Checks roles (system first only, then user/assistant; the last turn is the user's) and counts
// images; throws Error naming the turn. Returns the number of images.
int64_t check_chat_turns(const std::vector<ChatTurn>& turns, int64_t max_images, const char* where);

}  // namespace omniflux
