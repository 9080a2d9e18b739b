// The response bodies of the OpenAI-shaped API (api.h); apart from the request validation in
// api.cpp, which tests/fuzz/fuzz_api_request.cpp fuzzes without the engine's build.
#include "api.h"

#include "omniflux/build_info.h"

namespace omniflux::server {

using nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---- responses ------------------------------------------------------------------------------------

json model_object(const ModelCaps& m, int64_t created) {
  json endpoints = json::array();
  if (m.generations) endpoints.push_back("/v1/images/generations");
  if (m.edits) endpoints.push_back("/v1/images/edits");
  if (m.chat) endpoints.push_back("/v1/chat/completions");
  json r = {{"id", model_name(m.id)}, {"object", "model"}, {"created", created}, {"owned_by", "omniflux"},
            {"endpoints", endpoints}};
  if (m.generations || m.edits)
    r["defaults"] = {{"size", std::to_string(m.width) + "x" + std::to_string(m.height)}, {"steps", m.steps},
                     {"guidance", m.guidance}, {"seed", m.seed}};
  if (!m.note.empty()) r["note"] = m.note;
  return r;
}

json models_response(const Catalog& catalog) {
  json data = json::array();
  for (const auto& m : catalog.models) data.push_back(model_object(m, catalog.created));
  return {{"object", "list"}, {"data", data}};
}

namespace {
std::string size_str(const GeneratedImage& g) { return std::to_string(g.width) + "x" + std::to_string(g.height); }
}  // namespace

json images_response(const std::vector<GeneratedImage>& images, int64_t created, const ImageUsage& u) {
  json data = json::array();
  for (const auto& g : images) data.push_back({{"b64_json", base64_encode(g.png.data(), g.png.size())}, {"seed", g.seed}});
  const int64_t input = u.text_tokens + u.image_tokens;
  json r = {{"created", created}, {"data", data}, {"output_format", images.empty() ? "png" : images[0].format},
            {"background", "opaque"}, {"quality", "auto"},
            {"usage", {{"input_tokens", input},
                       {"input_tokens_details", {{"text_tokens", u.text_tokens}, {"image_tokens", u.image_tokens}}},
                       {"output_tokens", u.output_tokens},
                       {"total_tokens", input + u.output_tokens}}}};
  if (!images.empty()) r["size"] = size_str(images[0]);
  return r;
}

json image_completed_event(const std::string& prefix, int64_t index, const GeneratedImage& g, int64_t created) {
  return {{"type", prefix + ".completed"}, {"index", index}, {"b64_json", base64_encode(g.png.data(), g.png.size())},
          {"created_at", created}, {"size", size_str(g)}, {"output_format", g.format}, {"background", "opaque"},
          {"quality", "auto"}, {"seed", g.seed}};
}

json image_progress_event(const std::string& prefix, int64_t index, const std::string& stage, int64_t step, int64_t total) {
  return {{"type", prefix + ".progress"}, {"index", index}, {"stage", stage}, {"step", step}, {"total", total}};
}

std::string system_fingerprint() {
  static const std::string fp = [] {
    const BuildInfo b = build_info();
    return "omniflux-" + b.version + "-torch" + b.torch_version + (b.cuda_compiled ? "-cuda" : "-cpu");
  }();
  return fp;
}

json chat_usage(const ChatResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens}};
}

json chat_response(const std::string& id, const std::string& model, int64_t created, const ChatResult& r) {
  json choices = json::array();
  for (size_t i = 0; i < r.choices.size(); ++i)
    choices.push_back({{"index", i},
                       {"message", {{"role", "assistant"}, {"content", r.choices[i].text}, {"refusal", nullptr}}},
                       {"logprobs", nullptr},
                       {"finish_reason", r.choices[i].finish_reason}});
  return {{"id", id},           {"object", "chat.completion"}, {"created", created},
          {"model", model},     {"choices", choices},          {"usage", chat_usage(r)},
          {"system_fingerprint", system_fingerprint()}};
}

json chat_chunk(const std::string& id, const std::string& model, int64_t created, int64_t index, const json& delta,
                const char* finish_reason, bool include_usage) {
  json choice = {{"index", index}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (finish_reason) choice["finish_reason"] = finish_reason;
  json c = {{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
            {"model", model}, {"system_fingerprint", system_fingerprint()}, {"choices", json::array({choice})}};
  if (include_usage) c["usage"] = nullptr;
  return c;
}

json chat_usage_chunk(const std::string& id, const std::string& model, int64_t created, const ChatResult& r) {
  return {{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
          {"model", model}, {"system_fingerprint", system_fingerprint()}, {"choices", json::array()},
          {"usage", chat_usage(r)}};
}

}  // namespace omniflux::server
