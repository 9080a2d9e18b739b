#include "api.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "omniflux/error.h"
#include "omniflux/pipelines/flux.h"

namespace omniflux::server {

using nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---- models -------------------------------------------------------------------------------------

const char* model_name(ModelId m) {
  switch (m) {
    case ModelId::UniWorld: return "uniworld-v1";
    case ModelId::XOmni: return "x-omni";
    case ModelId::Flux: return "flux.1-dev";
  }
  return "?";
}

const ModelCaps* Catalog::find(const std::string& id) const {
  for (const auto& m : models)
    if (id == model_name(m.id)) return &m;
  return nullptr;
}

// ---- JSON fields --------------------------------------------------------------------------------

json parse_json_body(const std::string& body) {
  if (body.empty()) throw ApiError(400, "the request body is empty; expected a JSON object", "", "invalid_json");
  constexpr int kMaxDepth = 32;
  json j;
  try {
    j = json::parse(body, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) throw ApiError(400, "JSON nested deeper than 32 levels", "", "invalid_json");
      return true;
    });
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("malformed JSON: ") + e.what(), "", "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "the body must be a JSON object", "", "invalid_json");
  return j;
}

namespace {

enum class Kind { Str, Int, Num, Bool };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Str: return "a string";
    case Kind::Int: return "an integer";
    case Kind::Num: return "a number";
    case Kind::Bool: return "a boolean";
  }
  return "?";
}

using Schema = std::map<std::string, Kind>;

// The image endpoints' fields (OpenAI's, then ours).
const Schema& image_schema() {
  static const Schema s = {
      {"model", Kind::Str}, {"prompt", Kind::Str}, {"n", Kind::Int}, {"size", Kind::Str},
      {"response_format", Kind::Str}, {"output_format", Kind::Str}, {"user", Kind::Str}, {"stream", Kind::Bool},
      {"seed", Kind::Int}, {"steps", Kind::Int}, {"guidance", Kind::Num}, {"negative_prompt", Kind::Str},
      {"true_cfg_scale", Kind::Num}, {"use_t5", Kind::Bool}, {"snap", Kind::Bool}, {"temperature", Kind::Num},
      {"top_k", Kind::Int}, {"top_p", Kind::Num}, {"min_p", Kind::Num}, {"decoder_cfg_scale", Kind::Num},
      {"decoder_cfg_scale_2", Kind::Num}};
  return s;
}

// Every key known and of its kind; null counts as absent.
void check_fields(const json& j, const Schema& schema, const std::string& prefix = "") {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto f = schema.find(it.key());
    if (f == schema.end())
      throw ApiError(400, "unknown field '" + it.key() + "'", prefix + it.key(), "unknown_parameter");
    const json& v = it.value();
    if (v.is_null()) continue;
    bool ok = false;
    switch (f->second) {
      case Kind::Str: ok = v.is_string(); break;
      case Kind::Int: ok = v.is_number_integer(); break;
      case Kind::Num: ok = v.is_number(); break;
      case Kind::Bool: ok = v.is_boolean(); break;
    }
    if (!ok)
      throw ApiError(400, "'" + it.key() + "' must be " + kind_name(f->second) + ", got " + v.type_name(),
                     prefix + it.key(), "invalid_type");
  }
}

bool has(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

std::optional<std::string> get_str(const json& j, const char* key) {
  if (!has(j, key)) return std::nullopt;
  return j.at(key).get<std::string>();
}

std::optional<int64_t> get_int(const json& j, const char* key, int64_t lo, int64_t hi) {
  if (!has(j, key)) return std::nullopt;
  const json& v = j.at(key);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    throw ApiError(400, std::string("'") + key + "' must be at most " + std::to_string(hi), key, "invalid_value");
  const int64_t x = v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>()) : v.get<int64_t>();
  if (x < lo || x > hi)
    throw ApiError(400, std::string("'") + key + "' must be in " + std::to_string(lo) + ".." + std::to_string(hi) +
                            ", got " + std::to_string(x),
                   key, "invalid_value");
  return x;
}

std::optional<double> get_num(const json& j, const char* key, double lo, double hi) {
  if (!has(j, key)) return std::nullopt;
  const double x = j.at(key).get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    char range[96];
    std::snprintf(range, sizeof range, "%g..%g", lo, hi);
    throw ApiError(400, std::string("'") + key + "' must be in " + range, key, "invalid_value");
  }
  return x;
}

std::optional<bool> get_bool(const json& j, const char* key) {
  if (!has(j, key)) return std::nullopt;
  return j.at(key).get<bool>();
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned c = p[i];
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c >> 5) == 0x6) n = 1, cp = c & 0x1f;
    else if ((c >> 4) == 0xe) n = 2, cp = c & 0x0f;
    else if ((c >> 3) == 0x1e) n = 3, cp = c & 0x07;
    else return false;
    if (i + n >= s.size()) return false;  // needs bytes i+1 .. i+n
    for (size_t k = 1; k <= n; ++k) {
      if ((p[i + k] >> 6) != 0x2) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

// A prompt-like text: valid UTF-8, no NUL (the PNG text chunk cannot hold one), within the limit.
std::string check_text(const std::string& s, const std::string& param, const Limits& limits, bool required) {
  if (required && s.empty()) throw ApiError(400, "'" + param + "' must not be empty", param, "invalid_value");
  if (static_cast<int64_t>(s.size()) > limits.max_prompt_bytes)
    throw ApiError(400,
                   "'" + param + "' is " + std::to_string(s.size()) + " bytes, more than the limit of " +
                       std::to_string(limits.max_prompt_bytes),
                   param, "prompt_too_long");
  if (s.find('\0') != std::string::npos) throw ApiError(400, "'" + param + "' contains a NUL character", param, "invalid_value");
  if (!valid_utf8(s)) throw ApiError(400, "'" + param + "' is not valid UTF-8", param, "invalid_value");
  return s;
}

std::string loaded_list(const Catalog& c) {
  std::string s;
  for (const auto& m : c.models) s += (s.empty() ? "" : ", ") + std::string(model_name(m.id));
  return s;
}

// The model named in `body`, or the only one serving the endpoint.
const ModelCaps& pick_model(const json& body, const Catalog& catalog, bool ModelCaps::*serves, const char* endpoint) {
  if (auto id = get_str(body, "model")) {
    const ModelCaps* m = catalog.find(*id);
    if (!m)
      throw ApiError(404, "model '" + *id + "' is not served here (loaded: " + loaded_list(catalog) + ")", "model",
                     "model_not_found");
    if (!(m->*serves))
      throw ApiError(400,
                     "model '" + *id + "' does not serve " + endpoint + (m->note.empty() ? "" : " (" + m->note + ")"),
                     "model", "unsupported_model");
    return *m;
  }
  const ModelCaps* only = nullptr;
  int count = 0;
  for (const auto& m : catalog.models)
    if (m.*serves) only = &m, ++count;
  if (count == 1) return *only;
  throw ApiError(400, std::string("'model' is required: ") + std::to_string(count) + " loaded models serve " + endpoint,
                 "model", "missing_required_parameter");
}

std::pair<int64_t, int64_t> parse_size(const std::string& s) {
  const size_t x = s.find('x');
  auto digits = [](const std::string& t) {
    return !t.empty() && t.size() <= 6 && t.find_first_not_of("0123456789") == std::string::npos;
  };
  if (x == std::string::npos || !digits(s.substr(0, x)) || !digits(s.substr(x + 1)))
    throw ApiError(400, "'size' must be \"WIDTHxHEIGHT\" (e.g. \"1024x1024\"), got \"" + s + "\"", "size", "invalid_value");
  return {std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1))};
}

void only_for(const json& body, const char* key, ModelId want, const ModelCaps& m) {
  if (has(body, key) && m.id != want)
    throw ApiError(400, std::string("'") + key + "' applies to " + model_name(want) + " only", key, "unsupported_parameter");
}

ImageRequest parse_image_common(const json& body, const Catalog& catalog, const Limits& limits, bool edit) {
  check_fields(body, image_schema());
  ImageRequest r;
  r.edit = edit;
  const ModelCaps& m = edit ? pick_model(body, catalog, &ModelCaps::edits, "/v1/images/edits")
                            : pick_model(body, catalog, &ModelCaps::generations, "/v1/images/generations");
  r.model = m.id;
  if (!has(body, "prompt")) throw ApiError(400, "'prompt' is required", "prompt", "missing_required_parameter");
  r.prompt = check_text(*get_str(body, "prompt"), "prompt", limits, true);
  r.stream = get_bool(body, "stream").value_or(false);
  r.n = get_int(body, "n", 1, limits.max_n).value_or(1);
  if (auto f = get_str(body, "response_format"); f && *f != "b64_json")
    throw ApiError(400, "'response_format' must be \"b64_json\" (the server keeps no files to link to), got \"" + *f + "\"",
                   "response_format", "invalid_value");
  if (auto f = get_str(body, "output_format"); f && *f != "png")
    throw ApiError(400, "'output_format' must be \"png\", got \"" + *f + "\"", "output_format", "invalid_value");

  r.width = m.width;
  r.height = m.height;
  if (auto s = get_str(body, "size"); s && *s != "auto") std::tie(r.width, r.height) = parse_size(*s);
  if (r.width % 16 || r.height % 16 || r.width < 16 || r.height < 16 || r.width > kFluxMaxSide || r.height > kFluxMaxSide)
    throw ApiError(400,
                   "'size' sides must be multiples of 16 in 16.." + std::to_string(kFluxMaxSide) + ", got " +
                       std::to_string(r.width) + "x" + std::to_string(r.height),
                   "size", "invalid_value");
  if (r.width * r.height > limits.max_pixels)
    throw ApiError(400,
                   "'size' " + std::to_string(r.width) + "x" + std::to_string(r.height) + " has more pixels than the limit of " +
                       std::to_string(limits.max_pixels),
                   "size", "limit_exceeded");
  r.seed = static_cast<uint64_t>(get_int(body, "seed", 0, INT64_MAX).value_or(static_cast<int64_t>(m.seed)));
  r.steps = get_int(body, "steps", 1, limits.max_steps).value_or(m.steps);
  r.guidance = get_num(body, "guidance", 0, 100).value_or(m.guidance);

  only_for(body, "true_cfg_scale", ModelId::Flux, m);
  only_for(body, "use_t5", ModelId::UniWorld, m);
  only_for(body, "snap", ModelId::UniWorld, m);
  for (const char* k : {"temperature", "top_k", "top_p", "min_p", "decoder_cfg_scale", "decoder_cfg_scale_2"})
    only_for(body, k, ModelId::XOmni, m);
  if (has(body, "snap") && !edit)
    throw ApiError(400, "'snap' applies to edits only (the size snaps to the references' aspect ratio)", "snap",
                   "unsupported_parameter");
  r.true_cfg_scale = get_num(body, "true_cfg_scale", 1, 100);
  r.use_t5 = get_bool(body, "use_t5");
  r.snap = get_bool(body, "snap");
  r.temperature = get_num(body, "temperature", 1e-3, 100);
  r.top_k = get_int(body, "top_k", 0, 1 << 20);
  r.top_p = get_num(body, "top_p", 1e-6, 1);
  r.min_p = get_num(body, "min_p", 0, 1);
  r.decoder_cfg_scale = get_num(body, "decoder_cfg_scale", 0, 100);
  r.decoder_cfg_scale_2 = get_num(body, "decoder_cfg_scale_2", 0, 100);

  if (auto neg = get_str(body, "negative_prompt")) {
    r.negative_prompt = check_text(*neg, "negative_prompt", limits, false);
    if (m.id == ModelId::UniWorld)
      throw ApiError(400, "'negative_prompt' is not used by uniworld-v1", "negative_prompt", "unsupported_parameter");
    if (m.id == ModelId::Flux && r.true_cfg_scale.value_or(1.0) <= 1.0)
      throw ApiError(400, "'negative_prompt' needs 'true_cfg_scale' > 1 on flux.1-dev", "negative_prompt", "invalid_value");
    if (m.id == ModelId::XOmni && r.guidance == 1.0)
      throw ApiError(400, "'negative_prompt' needs 'guidance' != 1 on x-omni (the LM's classifier-free guidance)",
                     "negative_prompt", "invalid_value");
  }
  if (m.id == ModelId::Flux && r.true_cfg_scale.value_or(1.0) > 1.0 && !r.negative_prompt)
    throw ApiError(400, "'true_cfg_scale' > 1 needs a 'negative_prompt'", "true_cfg_scale", "invalid_value");
  return r;
}

}  // namespace

ImageRequest parse_image_generation(const json& body, const Catalog& catalog, const Limits& limits) {
  return parse_image_common(body, catalog, limits, false);
}

ImageRequest parse_image_edit(const std::vector<FormPart>& parts, const Catalog& catalog, const Limits& limits) {
  // Text parts become a JSON object typed by the schema, so both endpoints validate alike.
  json body = json::object();
  std::vector<const FormPart*> images;
  for (const auto& p : parts) {
    if (p.name == "image" || p.name == "image[]") {
      images.push_back(&p);
      continue;
    }
    if (p.name == "mask") throw ApiError(400, "'mask' is not supported: the prompt says what to change", "mask", "unsupported_parameter");
    const auto f = image_schema().find(p.name);
    if (f == image_schema().end()) throw ApiError(400, "unknown field '" + p.name + "'", p.name, "unknown_parameter");
    if (body.contains(p.name)) throw ApiError(400, "field '" + p.name + "' given twice", p.name, "invalid_value");
    if (f->first == "prompt" || f->first == "negative_prompt") {
      body[p.name] = check_text(p.data, p.name, limits, false);
      continue;
    }
    if (p.data.size() > 256) throw ApiError(400, "field '" + p.name + "' is too long", p.name, "invalid_value");
    const std::string& v = p.data;
    auto bad = [&]() { return ApiError(400, "'" + p.name + "' must be " + kind_name(f->second) + ", got \"" + v + "\"", p.name, "invalid_type"); };
    switch (f->second) {
      case Kind::Str:
        if (!valid_utf8(v)) throw ApiError(400, "'" + p.name + "' is not valid UTF-8", p.name, "invalid_value");
        body[p.name] = v;
        break;
      case Kind::Int: {
        if (v.empty() || v.size() > 20 || v.find_first_not_of("-0123456789") != std::string::npos) throw bad();
        try {
          size_t used = 0;
          const long long x = std::stoll(v, &used);
          if (used != v.size()) throw bad();
          body[p.name] = static_cast<int64_t>(x);
        } catch (const std::logic_error&) {
          throw bad();
        }
        break;
      }
      case Kind::Num: {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (v.empty() || *end || !std::isfinite(x)) throw bad();
        body[p.name] = x;
        break;
      }
      case Kind::Bool:
        if (v != "true" && v != "false") throw bad();
        body[p.name] = v == "true";
        break;
    }
  }
  ImageRequest r = parse_image_common(body, catalog, limits, true);
  if (images.empty()) throw ApiError(400, "at least one 'image[]' part is required", "image", "missing_required_parameter");
  if (static_cast<int64_t>(images.size()) > limits.max_images)
    throw ApiError(400,
                   std::to_string(images.size()) + " images given, at most " + std::to_string(limits.max_images) + " are accepted",
                   "image", "limit_exceeded");
  for (size_t i = 0; i < images.size(); ++i)
    r.images.push_back(decode_upload(images[i]->data, "image[" + std::to_string(i) + "]", limits));
  return r;
}

ChatRequest parse_chat(const json& body, const Catalog& catalog, const Limits& limits) {
  static const Schema schema = {{"model", Kind::Str},       {"stream", Kind::Bool},
                                {"max_tokens", Kind::Int},  {"max_completion_tokens", Kind::Int},
                                {"temperature", Kind::Num}, {"n", Kind::Int},
                                {"user", Kind::Str}};
  // messages and stream_options are structured: checked below.
  json flat = body;
  flat.erase("messages");
  flat.erase("stream_options");
  check_fields(flat, schema);
  ChatRequest r;
  const ModelCaps& m = pick_model(body, catalog, &ModelCaps::chat, "/v1/chat/completions");
  r.model = m.id;
  r.stream = get_bool(body, "stream").value_or(false);
  if (auto t = get_num(body, "temperature", 0, 2); t && *t != 0)
    throw ApiError(400, "decoding is greedy: 'temperature' must be 0 or absent", "temperature", "unsupported_value");
  get_int(body, "n", 1, 1);
  const int64_t default_tokens = m.id == ModelId::UniWorld ? 128 : 512;  // app.py / chat.py
  r.max_tokens = std::min(default_tokens, limits.max_tokens);
  if (auto t = get_int(body, "max_tokens", 1, limits.max_tokens)) r.max_tokens = *t;
  if (auto t = get_int(body, "max_completion_tokens", 1, limits.max_tokens)) r.max_tokens = *t;
  if (has(body, "stream_options")) {
    const json& so = body.at("stream_options");
    if (!so.is_object()) throw ApiError(400, "'stream_options' must be an object", "stream_options", "invalid_type");
    for (auto it = so.begin(); it != so.end(); ++it) {
      if (it.key() != "include_usage")
        throw ApiError(400, "unknown field '" + it.key() + "'", "stream_options." + it.key(), "unknown_parameter");
      if (!it.value().is_boolean())
        throw ApiError(400, "'include_usage' must be a boolean", "stream_options.include_usage", "invalid_type");
      if (it.value().get<bool>())
        throw ApiError(400, "token usage is not reported", "stream_options.include_usage", "unsupported_value");
    }
  }

  if (!has(body, "messages")) throw ApiError(400, "'messages' is required", "messages", "missing_required_parameter");
  const json& msgs = body.at("messages");
  if (!msgs.is_array() || msgs.empty())
    throw ApiError(400, "'messages' must be a non-empty array", "messages", "invalid_type");
  if (msgs.size() != 1)
    throw ApiError(400, "'messages' must hold exactly one user message (one turn: its text and images)", "messages",
                   "unsupported_value");
  const json& msg = msgs[0];
  const std::string mp = "messages[0]";
  if (!msg.is_object()) throw ApiError(400, "each message must be an object", mp, "invalid_type");
  for (auto it = msg.begin(); it != msg.end(); ++it)
    if (it.key() != "role" && it.key() != "content" && it.key() != "name")
      throw ApiError(400, "unknown field '" + it.key() + "'", mp + "." + it.key(), "unknown_parameter");
  if (!msg.contains("role") || !msg["role"].is_string() || msg["role"] != "user")
    throw ApiError(400, "the message's role must be \"user\"", mp + ".role", "invalid_value");
  if (!msg.contains("content")) throw ApiError(400, "the message has no content", mp + ".content", "missing_required_parameter");
  const json& content = msg["content"];
  std::string text;
  std::vector<std::pair<std::string, std::string>> uris;  // (param, uri)
  if (content.is_string()) {
    text = content.get<std::string>();
  } else if (content.is_array()) {
    for (size_t i = 0; i < content.size(); ++i) {
      const json& part = content[i];
      const std::string pp = mp + ".content[" + std::to_string(i) + "]";
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
        throw ApiError(400, "a content part must be an object with a 'type'", pp, "invalid_type");
      const std::string type = part["type"];
      if (type == "text") {
        if (!part.contains("text") || !part["text"].is_string())
          throw ApiError(400, "a text part needs a string 'text'", pp + ".text", "invalid_type");
        for (auto it = part.begin(); it != part.end(); ++it)
          if (it.key() != "type" && it.key() != "text")
            throw ApiError(400, "unknown field '" + it.key() + "'", pp + "." + it.key(), "unknown_parameter");
        if (!text.empty()) text += "\n";
        text += part["text"].get<std::string>();
      } else if (type == "image_url") {
        if (!part.contains("image_url")) throw ApiError(400, "an image_url part needs 'image_url'", pp + ".image_url", "missing_required_parameter");
        const json& iu = part["image_url"];
        if (iu.is_string()) {
          uris.emplace_back(pp + ".image_url", iu.get<std::string>());
        } else if (iu.is_object() && iu.contains("url") && iu["url"].is_string()) {
          for (auto it = iu.begin(); it != iu.end(); ++it)
            if (it.key() != "url" && it.key() != "detail")
              throw ApiError(400, "unknown field '" + it.key() + "'", pp + ".image_url." + it.key(), "unknown_parameter");
          uris.emplace_back(pp + ".image_url.url", iu["url"].get<std::string>());
        } else {
          throw ApiError(400, "'image_url' must be {\"url\": \"data:image/...;base64,...\"}", pp + ".image_url", "invalid_type");
        }
      } else {
        throw ApiError(400, "content part type must be \"text\" or \"image_url\", got \"" + type + "\"", pp + ".type",
                       "invalid_value");
      }
    }
  } else {
    throw ApiError(400, "'content' must be a string or an array of parts", mp + ".content", "invalid_type");
  }
  r.text = check_text(text, mp + ".content", limits, true);
  const int64_t max_images = m.id == ModelId::XOmni ? 1 : limits.max_images;
  if (m.id == ModelId::XOmni && uris.size() != 1)
    throw ApiError(400, "x-omni chat takes exactly one image_url part, got " + std::to_string(uris.size()), mp + ".content",
                   "invalid_value");
  if (static_cast<int64_t>(uris.size()) > max_images)
    throw ApiError(400,
                   std::to_string(uris.size()) + " images given, at most " + std::to_string(max_images) + " are accepted",
                   mp + ".content", "limit_exceeded");
  for (const auto& [param, uri] : uris) r.images.push_back(decode_upload(decode_data_uri(uri, param, limits), param, limits));
  return r;
}

// ---- images ---------------------------------------------------------------------------------------

Image decode_upload(const std::string& bytes, const std::string& param, const Limits& limits) {
  if (static_cast<int64_t>(bytes.size()) > limits.max_image_bytes)
    throw ApiError(413,
                   "image is " + std::to_string(bytes.size()) + " bytes, more than the limit of " +
                       std::to_string(limits.max_image_bytes),
                   param, "image_too_large");
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  try {
    const auto [w, h] = image_size(data, bytes.size(), param);
    if (static_cast<int64_t>(w) * h > limits.max_image_pixels)
      throw ApiError(400,
                     "image is " + std::to_string(w) + "x" + std::to_string(h) + ", more pixels than the limit of " +
                         std::to_string(limits.max_image_pixels),
                     param, "image_too_large");
    return decode_image(data, bytes.size(), param);
  } catch (const Error& e) {
    throw ApiError(400, std::string("not a readable image: ") + e.what(), param, "invalid_image");
  }
}

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

json images_response(const std::vector<GeneratedImage>& images, int64_t created) {
  json data = json::array();
  for (const auto& g : images) data.push_back({{"b64_json", base64_encode(g.png.data(), g.png.size())}, {"seed", g.seed}});
  json r = {{"created", created}, {"data", data}, {"output_format", "png"}};
  if (!images.empty()) r["size"] = size_str(images[0]);
  return r;
}

json image_completed_event(const std::string& prefix, int64_t index, const GeneratedImage& g, int64_t created) {
  return {{"type", prefix + ".completed"}, {"index", index}, {"b64_json", base64_encode(g.png.data(), g.png.size())},
          {"created_at", created}, {"size", size_str(g)}, {"output_format", "png"}, {"seed", g.seed}};
}

json image_progress_event(const std::string& prefix, int64_t index, const std::string& stage, int64_t step, int64_t total) {
  return {{"type", prefix + ".progress"}, {"index", index}, {"stage", stage}, {"step", step}, {"total", total}};
}

json chat_response(const std::string& id, const std::string& model, int64_t created, const std::string& text) {
  return {{"id", id},
          {"object", "chat.completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({{{"index", 0},
                                    {"message", {{"role", "assistant"}, {"content", text}}},
                                    {"finish_reason", "stop"}}})}};
}

json chat_chunk(const std::string& id, const std::string& model, int64_t created, const json& delta,
                const char* finish_reason) {
  json choice = {{"index", 0}, {"delta", delta}, {"finish_reason", nullptr}};
  if (finish_reason) choice["finish_reason"] = finish_reason;
  return {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
          {"choices", json::array({choice})}};
}

}  // namespace omniflux::server
