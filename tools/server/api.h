#pragma once
// The OpenAI-shaped HTTP API without the HTTP: request parsing and validation into typed requests,
// the error object, and the response bodies. Everything here is unit-tested without a socket
// (tests/test_server_api.cpp). Field semantics per model are in docs/serving.md.
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api_error.h"
#include "data_uri.h"
#include "multipart.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/chat.h"
#include "options.h"

namespace omniflux::server {

// ---- models -----------------------------------------------------------------------------------

enum class ModelId { UniWorld, XOmni, Flux };
const char* model_name(ModelId m);  // "uniworld-v1", "x-omni", "flux.1-dev"

// What each loaded model serves, and its defaults (from the official scripts, as the CLIs use).
struct ModelCaps {
  ModelId id = ModelId::UniWorld;
  bool generations = false, edits = false, chat = false;
  int64_t width = 1024, height = 1024;
  int64_t steps = 28;
  double guidance = 3.5;
  uint64_t seed = 0;
  std::string note;  // why an endpoint is off (e.g. X-Omni without --flux)
  // Chat: images a conversation may hold (UniWorld kUniWorldMaxImages, X-Omni 1 as chat.py), the
  // default answer length (app.py 128, chat.py 512) and the LM's logit count (0 = unchecked).
  int64_t chat_images = 0, chat_max_tokens = 512, vocab_size = 0;
};

struct Catalog {
  std::vector<ModelCaps> models;
  int64_t created = 0;  // unix time the server started, for /v1/models
  const ModelCaps* find(const std::string& id) const;
};

// ---- requests -----------------------------------------------------------------------------------

struct ImageRequest {
  ModelId model = ModelId::UniWorld;
  bool edit = false;
  bool stream = false;
  std::string prompt;
  std::vector<Image> images;  // edits: 1..max_images references, decoded
  int64_t width = 0, height = 0;
  int64_t n = 1;
  uint64_t seed = 0;  // image i uses seed + i
  int64_t steps = 0;  // 0 = the model's default (X-Omni: its decoder config)
  double guidance = 0;
  std::optional<std::string> negative_prompt;
  // Extensions (docs/serving.md): FLUX true CFG; UniWorld T5 and snapping; X-Omni sampling and
  // decoder guidance.
  std::optional<double> true_cfg_scale;
  std::optional<bool> use_t5, snap;
  std::optional<double> temperature, top_p, min_p, decoder_cfg_scale, decoder_cfg_scale_2;
  std::optional<int64_t> top_k;
  std::string output_format = "png";  // or "jpeg"
  int64_t output_compression = 100;   // JPEG quality (OpenAI's 0..100 compression level, 0 read as 1)
};

struct ChatRequest {
  ModelId model = ModelId::XOmni;
  bool stream = false;
  bool include_usage = false;
  std::vector<ChatTurn> turns;  // system, user and assistant turns, images decoded
  int64_t images = 0;           // in all turns
  ChatOptions options;          // max_new_tokens set (the request's, or the model's default)
  std::optional<uint64_t> seed; // absent: each request draws one (OpenAI: not reproducible)
  int64_t n = 1;                // choices, each its own sample (seed + index)
};

// What a chat job produced: one text per choice, and the token counts of the whole request.
struct ChatChoice {
  std::string text;
  std::string finish_reason;  // "stop" or "length"
};
struct ChatResult {
  std::vector<ChatChoice> choices;
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// JSON with a nesting limit (deep nesting would otherwise cost stack when the value is destroyed).
nlohmann::json parse_json_body(const std::string& body);

ImageRequest parse_image_generation(const nlohmann::json& body, const Catalog& catalog, const Limits& limits);
// Edits: text fields and 1..max_images `image`/`image[]` parts, already split by the HTTP layer.
ImageRequest parse_image_edit(const std::vector<FormPart>& parts, const Catalog& catalog, const Limits& limits);
ChatRequest parse_chat(const nlohmann::json& body, const Catalog& catalog, const Limits& limits);

// An uploaded image (raw bytes): size limits (bytes, then the declared pixel count read from the
// header before anything is allocated), then decoded. `param` names the field in errors.
Image decode_upload(const std::string& bytes, const std::string& param, const Limits& limits);

// "data:image/png;base64,...." -> bytes, at most limits.max_image_bytes (data_uri.h).
inline std::string decode_data_uri(const std::string& uri, const std::string& param, const Limits& limits) {
  return decode_data_uri(uri, param, limits.max_image_bytes);
}

// ---- responses ----------------------------------------------------------------------------------

struct GeneratedImage {
  std::vector<uint8_t> png;  // the encoded image (PNG, or JPEG when format says so)
  std::string format = "png";
  int width = 0, height = 0;
  uint64_t seed = 0;
};

// The images API's usage: the prompt tokens the model read (text, and reference-image tokens for
// UniWorld edits) and the tokens it generated (X-Omni's image codes; none for the diffusion models).
struct ImageUsage {
  int64_t text_tokens = 0, image_tokens = 0, output_tokens = 0;
};

nlohmann::json models_response(const Catalog& catalog);
nlohmann::json model_object(const ModelCaps& m, int64_t created);
nlohmann::json images_response(const std::vector<GeneratedImage>& images, int64_t created, const ImageUsage& usage = {});
// One image as a streamed event of type "<prefix>.completed" (prefix image_generation / image_edit).
nlohmann::json image_completed_event(const std::string& prefix, int64_t index, const GeneratedImage& image,
                                     int64_t created);
nlohmann::json image_progress_event(const std::string& prefix, int64_t index, const std::string& stage, int64_t step,
                                    int64_t total);
// "omniflux-<version>": the system_fingerprint of every chat response.
std::string system_fingerprint();
nlohmann::json chat_usage(const ChatResult& r);
nlohmann::json chat_response(const std::string& id, const std::string& model, int64_t created, const ChatResult& r);
// A chat.completion.chunk of choice `index`: `delta` {"role"} / {"content"} / {}; finish_reason
// null unless given. With include_usage every chunk carries "usage": null (OpenAI's shape).
nlohmann::json chat_chunk(const std::string& id, const std::string& model, int64_t created, int64_t index,
                          const nlohmann::json& delta, const char* finish_reason = nullptr, bool include_usage = false);
// The last chunk of a stream with include_usage: no choices, the usage of the whole request.
nlohmann::json chat_usage_chunk(const std::string& id, const std::string& model, int64_t created, const ChatResult& r);

// Serialises for the wire: invalid UTF-8 never throws (it is replaced).
std::string dump(const nlohmann::json& j);

}  // namespace omniflux::server
