#include "text/chat_template.h"

#include "omniflux/error.h"

namespace omniflux::text {

namespace {

constexpr const char* kImStart = "<|im_start|>";
constexpr const char* kImEnd = "<|im_end|>\n";

// Appends a text-only message's content to `out`, reporting each non-markup item in user_text.
void append_text_only(std::string& out, const ChatMessage& m, const char* where, std::vector<TextSpan>* user_text) {
  for (const auto& c : m.content) {
    if (c.type != ChatContent::Type::Text) {
      throw Error("this chat template takes text only", where, "text content", "an image or video item");
    }
    if (user_text && !c.markup && !c.text.empty()) user_text->push_back({out.size(), out.size() + c.text.size()});
    out += c.text;
  }
}

}  // namespace

std::string render_qwen2_5_vl(const std::vector<ChatMessage>& messages, const Qwen2_5VLTemplateOptions& options,
                              std::vector<TextSpan>* user_text) {
  std::string out;
  int images = 0, videos = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (i == 0 && m.role != "system") {
      out += std::string(kImStart) + "system\n" + kQwen2_5VLDefaultSystemPrompt + kImEnd;
    }
    out += kImStart + m.role + "\n";
    for (const auto& c : m.content) {
      switch (c.type) {
        case ChatContent::Type::Image:
          ++images;
          if (options.add_vision_id) out += "Picture " + std::to_string(images) + ": ";
          out += "<|vision_start|><|image_pad|><|vision_end|>";
          break;
        case ChatContent::Type::Video:
          ++videos;
          if (options.add_vision_id) out += "Video " + std::to_string(videos) + ": ";
          out += "<|vision_start|><|video_pad|><|vision_end|>";
          break;
        case ChatContent::Type::Text:
          if (user_text && !c.text.empty()) user_text->push_back({out.size(), out.size() + c.text.size()});
          out += c.text;
          break;
      }
    }
    out += kImEnd;
  }
  if (options.add_generation_prompt) out += std::string(kImStart) + "assistant\n";
  return out;
}

std::string render_uniworld(std::string_view prompt, int num_images, std::vector<TextSpan>* user_text) {
  if (num_images < 0) throw Error("negative image count", "render_uniworld", ">= 0", std::to_string(num_images));
  ChatMessage user{"user", {ChatContent::make_text(std::string(prompt))}};
  for (int i = 0; i < num_images; ++i) user.content.push_back(ChatContent::image());
  return render_uniworld(std::vector<ChatMessage>{user}, user_text);
}

std::string render_uniworld(const std::vector<ChatMessage>& messages, std::vector<TextSpan>* user_text) {
  std::vector<TextSpan> spans;
  const std::string full = render_qwen2_5_vl(messages, {}, &spans);
  // app.py: '<|im_end|>\n'.join(text.split('<|im_end|>\n')[1:]) drops the system turn, which is
  // everything up to and including the first "<|im_end|>\n" (the default system prompt has none).
  // A system message of the caller's is kept: app.py never has one, and dropping it would ignore it.
  const size_t cut = !messages.empty() && messages[0].role == "system" ? 0 : full.find(kImEnd) + std::string(kImEnd).size();
  if (user_text)
    for (const TextSpan& sp : spans) user_text->push_back({sp.begin - cut, sp.end - cut});
  return full.substr(cut);
}

std::string render_xomni_chat(const std::vector<ChatMessage>& messages, const XOmniChatOptions& options,
                              std::vector<TextSpan>* user_text) {
  std::string out;
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    out += std::string(kImStart) + "system\n";
    append_text_only(out, messages[0], "render_xomni_chat: system", user_text);
    out += kImEnd;
    first = 1;
  } else if (options.system_prompt) {
    out += std::string(kImStart) + "system\n" + *options.system_prompt + kImEnd;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "user" && m.role != "assistant" && m.role != "system") {
      throw Error("unsupported chat role", "render_xomni_chat", "system, user or assistant", m.role);
    }
    out += kImStart + m.role + "\n";
    append_text_only(out, m, "render_xomni_chat", user_text);
    out += kImEnd;
  }
  if (options.add_generation_prompt) out += std::string(kImStart) + "assistant\n";
  return out;
}

std::string render_xomni_chat(std::string_view user_content, const XOmniChatOptions& options,
                              std::vector<TextSpan>* user_text) {
  return render_xomni_chat({ChatMessage::text("user", std::string(user_content))}, options, user_text);
}

std::string xomni_image_prefix(int rows, int cols) {
  if (rows <= 0 || cols <= 0) {
    throw Error("X-Omni image grid must be positive", "xomni_image_prefix", "rows, cols > 0",
                std::to_string(rows) + " x " + std::to_string(cols));
  }
  return "<SOM>" + std::to_string(rows) + " " + std::to_string(cols) + "<IMAGE>";
}

std::string xomni_image_text(int rows, int cols, const std::vector<int64_t>& codes) {
  std::string out = xomni_image_prefix(rows, cols);
  if (codes.size() != static_cast<size_t>(rows) * static_cast<size_t>(cols)) {
    throw Error("X-Omni image code count does not match the grid", "xomni_image_text",
                std::to_string(static_cast<int64_t>(rows) * cols), std::to_string(codes.size()));
  }
  out.reserve(out.size() + codes.size() * 16 + 5);
  for (const int64_t c : codes) {
    if (c < 0) throw Error("negative X-Omni image code", "xomni_image_text", ">= 0", std::to_string(c));
    out += "<MM-Token-" + std::to_string(c) + ">";
  }
  return out + "<EOM>";
}

std::string xomni_t2i_prompt(std::string_view prompt, int rows, int cols, std::vector<TextSpan>* user_text) {
  if (user_text && !prompt.empty()) user_text->push_back({0, prompt.size()});
  return std::string(prompt) + xomni_image_prefix(rows, cols);
}

ChatTemplate parse_chat_template(std::string_view name) {
  if (name == "qwen2_5_vl") return ChatTemplate::Qwen2_5VL;
  if (name == "uniworld") return ChatTemplate::UniWorld;
  if (name == "xomni") return ChatTemplate::XOmni;
  throw Error("unknown chat template", "chat template name", "qwen2_5_vl, uniworld or xomni", std::string(name));
}

std::string render_one_turn(ChatTemplate which, std::string_view text, int num_images,
                            const std::optional<std::string>& system, std::vector<TextSpan>* user_text) {
  if (num_images < 0) throw Error("negative image count", "render_one_turn", ">= 0", std::to_string(num_images));
  switch (which) {
    case ChatTemplate::Qwen2_5VL: {
      std::vector<ChatMessage> messages;
      if (system) messages.push_back(ChatMessage::text("system", *system));
      ChatMessage user{"user", {}};
      for (int i = 0; i < num_images; ++i) user.content.push_back(ChatContent::image());
      user.content.push_back(ChatContent::make_text(std::string(text)));
      messages.push_back(std::move(user));
      return render_qwen2_5_vl(messages, {}, user_text);
    }
    case ChatTemplate::UniWorld:
      if (system) throw Error("the UniWorld prompt has no system turn", "render_one_turn", "no system prompt", *system);
      return render_uniworld(text, num_images, user_text);
    case ChatTemplate::XOmni: {
      if (num_images) {
        throw Error("X-Omni images are text (xomni_image_text), not placeholders", "render_one_turn", "0 images",
                    std::to_string(num_images));
      }
      XOmniChatOptions o;
      if (system) o.system_prompt = *system;
      return render_xomni_chat(text, o, user_text);
    }
  }
  throw Error("unknown chat template", "render_one_turn", "a ChatTemplate value", std::to_string(static_cast<int>(which)));
}

std::vector<int64_t> encode_prompt(const Tokenizer& tokenizer, std::string_view rendered,
                                   const std::vector<TextSpan>& user_text, PromptSpecialTokens mode,
                                   EncodeOptions options) {
  if (mode == PromptSpecialTokens::Text) options.literal_spans = user_text;
  return tokenizer.encode(rendered, options);
}

std::vector<int64_t> expand_image_pads(const std::vector<int64_t>& ids, int64_t pad_id, const std::vector<int64_t>& counts) {
  std::vector<int64_t> out;
  size_t k = 0;
  for (const int64_t id : ids) {
    if (id != pad_id) {
      out.push_back(id);
      continue;
    }
    if (k == counts.size()) {
      throw Error("more image placeholders than images", "expand_image_pads", std::to_string(counts.size()),
                  "at least " + std::to_string(k + 1));
    }
    if (counts[k] < 0) throw Error("negative placeholder count", "expand_image_pads", ">= 0", std::to_string(counts[k]));
    out.insert(out.end(), static_cast<size_t>(counts[k]), pad_id);
    ++k;
  }
  if (k != counts.size()) {
    throw Error("fewer image placeholders than images", "expand_image_pads", std::to_string(counts.size()), std::to_string(k));
  }
  return out;
}

}  // namespace omniflux::text
