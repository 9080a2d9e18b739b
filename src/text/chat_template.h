#pragma once
// Chat templates written as code (no Jinja engine): each function emits exactly the string the
// reference's template renders. Tokenize the result with the Qwen2 tokenizer; the special tokens
// in it are matched before BPE. Each renderer can report where the caller's text landed
// (`user_text`): pass those spans as EncodeOptions::literal_spans so that special-token text
// typed by a user stays text (PromptSpecialTokens::Text).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "omniflux/text/tokenizer.h"

namespace omniflux::text {

struct ChatContent {
  enum class Type { Text, Image, Video };
  Type type = Type::Text;
  std::string text;     // Type::Text only
  bool markup = false;  // text the caller wrote for the model (X-Omni's image text), not user text

  static ChatContent make_text(std::string t) { return {Type::Text, std::move(t)}; }
  static ChatContent make_markup(std::string t) { return {Type::Text, std::move(t), true}; }
  static ChatContent image() { return {Type::Image, {}}; }
  static ChatContent video() { return {Type::Video, {}}; }
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::vector<ChatContent> content;

  static ChatMessage text(std::string role, std::string t) { return {std::move(role), {ChatContent::make_text(std::move(t))}}; }
};

// ---- Qwen2.5-VL (chat_template.json of Qwen2.5-VL-7B-Instruct, used by processor.apply_chat_template)
constexpr const char* kQwen2_5VLDefaultSystemPrompt = "You are a helpful assistant.";

struct Qwen2_5VLTemplateOptions {
  bool add_generation_prompt = true;  // end with "<|im_start|>assistant\n"
  bool add_vision_id = false;         // "Picture n: " / "Video n: " before each placeholder
};

// When the first message is not a system message, the default system turn comes first. Images
// and videos become one <|vision_start|><|image_pad|><|vision_end|> (or <|video_pad|>) each; the
// processor later repeats the pad per vision token (expand_image_pads).
std::string render_qwen2_5_vl(const std::vector<ChatMessage>& messages, const Qwen2_5VLTemplateOptions& options = {},
                              std::vector<TextSpan>* user_text = nullptr);

// ---- UniWorld-V1 (app.py): one user message, the prompt text first, then one image
// placeholder per reference image; the Qwen2.5-VL template is applied and the default system
// turn cut off (split on "<|im_end|>\n", first piece dropped). For one image:
//   <|im_start|>user\n{prompt}<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n
std::string render_uniworld(std::string_view prompt, int num_images = 0, std::vector<TextSpan>* user_text = nullptr);
// A conversation for UniWorld's Qwen2.5-VL: the Qwen2.5-VL template, and without a system message
// the default system turn cut off as above (with one, the template keeps it).
std::string render_uniworld(const std::vector<ChatMessage>& messages, std::vector<TextSpan>* user_text = nullptr);

// ---- X-Omni chat (chat.py: tokenizer.apply_chat_template(..., add_generation_prompt=True)).
// X-Omni's own tokenizer_config.json template could not be read (docs/models/xomni.md §5, §9.5); the
// Qwen2.5 ChatML is assumed, and its default system prompt is a parameter. The default below is
// Qwen2.5-Instruct's; nullopt renders no system turn.
constexpr const char* kQwen2_5DefaultSystemPrompt =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

struct XOmniChatOptions {
  std::optional<std::string> system_prompt = std::string(kQwen2_5DefaultSystemPrompt);
  bool add_generation_prompt = true;
};

// Messages must hold text only (X-Omni images are text: xomni_image_text, passed as markup so it
// is not reported in user_text). A leading system message replaces the default system prompt, as
// in the Qwen2.5 template.
std::string render_xomni_chat(const std::vector<ChatMessage>& messages, const XOmniChatOptions& options = {},
                              std::vector<TextSpan>* user_text = nullptr);
// One user turn: "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
std::string render_xomni_chat(std::string_view user_content, const XOmniChatOptions& options = {},
                              std::vector<TextSpan>* user_text = nullptr);

// X-Omni's image text (modeling_xomni.py tokenize_image): "<SOM>{rows} {cols}<IMAGE>", then
// "<MM-Token-{code}>" per code in row-major order, then "<EOM>". codes.size() must be rows * cols.
std::string xomni_image_prefix(int rows, int cols);
std::string xomni_image_text(int rows, int cols, const std::vector<int64_t>& codes);
// The text-to-image prompt of generate.py: the raw prompt, then the prefix, no chat template.
std::string xomni_t2i_prompt(std::string_view prompt, int rows, int cols, std::vector<TextSpan>* user_text = nullptr);

// ---- One-turn rendering by name, for tools.
enum class ChatTemplate { Qwen2_5VL, UniWorld, XOmni };
// "qwen2_5_vl", "uniworld" or "xomni"; anything else is an Error.
ChatTemplate parse_chat_template(std::string_view name);
// One user turn around `text` with the generation prompt. Qwen2.5-VL puts the num_images image
// placeholders before the text; UniWorld after it. `system` replaces the default system prompt
// (not for UniWorld, which has none). X-Omni takes no image placeholders.
std::string render_one_turn(ChatTemplate which, std::string_view text, int num_images = 0,
                            const std::optional<std::string>& system = std::nullopt,
                            std::vector<TextSpan>* user_text = nullptr);

// Encodes a rendered prompt: with PromptSpecialTokens::Text the `user_text` spans are literal.
std::vector<int64_t> encode_prompt(const Tokenizer& tokenizer, std::string_view rendered,
                                   const std::vector<TextSpan>& user_text, PromptSpecialTokens mode,
                                   EncodeOptions options = {});

// The processor's expansion: the k-th occurrence of pad_id becomes counts[k] copies of it.
// The number of occurrences must equal counts.size().
std::vector<int64_t> expand_image_pads(const std::vector<int64_t>& ids, int64_t pad_id, const std::vector<int64_t>& counts);

}  // namespace omniflux::text
