// Request validation of the OpenAI-shaped API (api.h): JSON bodies and edit forms into typed
// requests. No engine, no LibTorch symbols: tests/fuzz/fuzz_api_request.cpp fuzzes it alone.
#include "api.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "omniflux/error.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"

namespace omniflux::server {

using nlohmann::json;

// ---- models -------------------------------------------------------------------------------------

const char* model_name(ModelId m) {
  switch (m) {
    case ModelId::UniWorld: return "uniworld-v1";
    case ModelId::XOmni: return "x-omni";
    case ModelId::Flux: return "flux.1-dev";
  }
  return "?";
}

ModelCaps default_caps(ModelId id) {
  ModelCaps c;
  c.id = id;
  // The pipelines' option structs hold the official scripts' defaults; the server reads them there.
  switch (id) {
    case ModelId::UniWorld: {
      const UniWorldOptions o;
      c.generations = c.edits = c.chat = true;
      c.width = o.width, c.height = o.height, c.steps = o.steps, c.guidance = o.guidance, c.seed = o.seed;
      c.chat_images = kUniWorldMaxImages;
      c.chat_max_tokens = kUniWorldAnswerTokens;
      break;
    }
    case ModelId::XOmni: {
      const XOmniOptions o;
      c.generations = c.chat = true;
      c.width = o.width, c.height = o.height, c.guidance = o.cfg_scale, c.seed = o.seed;
      c.chat_images = 1;        // chat.py: one image
      c.chat_max_tokens = kXOmniAnswerTokens;
      break;
    }
    case ModelId::Flux: {
      const FluxOptions o;
      c.generations = true;
      c.width = o.width, c.height = o.height, c.steps = o.steps, c.guidance = o.guidance, c.seed = o.seed;
      break;
    }
  }
  return c;
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

// Any: a structured value, checked by the parser that reads it.
enum class Kind { Str, Int, Num, Bool, Any };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Str: return "a string";
    case Kind::Int: return "an integer";
    case Kind::Num: return "a number";
    case Kind::Bool: return "a boolean";
    case Kind::Any: return "a value";
  }
  return "?";
}

using Schema = std::map<std::string, Kind>;

// The image endpoints' fields (OpenAI's generation and edit fields, then ours).
const Schema& image_schema() {
  static const Schema s = {
      {"model", Kind::Str}, {"prompt", Kind::Str}, {"n", Kind::Int}, {"size", Kind::Str},
      {"response_format", Kind::Str}, {"output_format", Kind::Str}, {"user", Kind::Str}, {"stream", Kind::Bool},
      {"quality", Kind::Str}, {"style", Kind::Str}, {"background", Kind::Str}, {"moderation", Kind::Str},
      {"output_compression", Kind::Int}, {"partial_images", Kind::Int}, {"input_fidelity", Kind::Str},
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
      case Kind::Any: ok = true; break;
    }
    if (!ok)
      throw ApiError(400, "'" + it.key() + "' must be " + kind_name(f->second) + ", got " + v.type_name(),
                     prefix + it.key(), "invalid_type");
  }
}

bool has(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

std::string quoted_list(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "\"" : ", \"") + x + "\"";
  return s;
}

// A string field that has no effect here: its default and other values that change nothing are
// accepted, anything else is refused with what is supported and why.
void accept_only(const json& j, const char* key, const std::vector<std::string>& accepted, const std::string& why) {
  if (!has(j, key)) return;
  const std::string v = j.at(key).get<std::string>();
  if (std::find(accepted.begin(), accepted.end(), v) != accepted.end()) return;
  if (accepted.empty()) throw ApiError(400, std::string("'") + key + "' is not supported here (" + why + ")", key, "unsupported_parameter");
  throw ApiError(400, std::string("'") + key + "' must be " + quoted_list(accepted) + " here (" + why + "), got \"" + v + "\"",
                 key, "unsupported_value");
}

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
  accept_only(body, "output_format", {"png", "jpeg"}, "WebP is not written");
  r.output_format = get_str(body, "output_format").value_or("png");
  if (auto c = get_int(body, "output_compression", 0, 100)) {
    if (r.output_format != "jpeg" && *c != 100)
      throw ApiError(400, "'output_compression' applies to output_format \"jpeg\" (PNG is lossless)", "output_compression",
                     "unsupported_parameter");
    r.output_compression = *c;
  }
  accept_only(body, "quality", {"auto"}, "quality follows 'steps' and 'size'");
  accept_only(body, "style", {"vivid"}, "the prompt sets the style; \"vivid\" is accepted as the default and does nothing");
  accept_only(body, "background", {"auto", "opaque"}, "images are opaque RGB");
  accept_only(body, "moderation", {"auto", "low"}, "no moderation model runs here");
  accept_only(body, "input_fidelity", {"low"}, "the references condition the model as it was trained");
  if (!edit && has(body, "input_fidelity"))
    throw ApiError(400, "'input_fidelity' applies to edits only", "input_fidelity", "unsupported_parameter");
  if (auto p = get_int(body, "partial_images", 0, 3); p && *p != 0)
    throw ApiError(400, "'partial_images' must be 0: no partial images are made (streams send progress events)",
                   "partial_images", "unsupported_value");

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
      case Kind::Any:  // no image field takes any JSON value; a form field could not carry one
        throw ApiError(400, "field '" + p.name + "' cannot be sent as a form field", p.name, "invalid_value");
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

namespace {

// The chat request's fields: OpenAI's (Create chat completion), then ours.
const Schema& chat_schema() {
  static const Schema s = {
      {"model", Kind::Str}, {"messages", Kind::Any}, {"stream", Kind::Bool}, {"stream_options", Kind::Any},
      {"max_tokens", Kind::Int}, {"max_completion_tokens", Kind::Int}, {"temperature", Kind::Num}, {"top_p", Kind::Num},
      {"n", Kind::Int}, {"seed", Kind::Int}, {"stop", Kind::Any}, {"presence_penalty", Kind::Num},
      {"frequency_penalty", Kind::Num}, {"logit_bias", Kind::Any}, {"logprobs", Kind::Bool}, {"top_logprobs", Kind::Int},
      {"user", Kind::Str}, {"metadata", Kind::Any}, {"store", Kind::Bool}, {"service_tier", Kind::Str},
      {"parallel_tool_calls", Kind::Bool}, {"tools", Kind::Any}, {"tool_choice", Kind::Any}, {"functions", Kind::Any},
      {"function_call", Kind::Any}, {"response_format", Kind::Any}, {"modalities", Kind::Any}, {"audio", Kind::Any},
      {"prediction", Kind::Any}, {"reasoning_effort", Kind::Str}, {"verbosity", Kind::Str},
      {"web_search_options", Kind::Any}, {"prompt_cache_key", Kind::Str}, {"safety_identifier", Kind::Str},
      // extensions (docs/serving.md)
      {"top_k", Kind::Int}, {"min_p", Kind::Num}, {"repetition_penalty", Kind::Num}};
  return s;
}

[[noreturn]] void refuse(const std::string& param, const std::string& why, const char* code = "unsupported_parameter") {
  throw ApiError(400, why, param, code);
}

// The fields that ask for what this server has no part of (tools, audio, structured output...):
// their empty and default values are accepted, anything else refused.
void check_chat_noops(const json& body) {
  auto empty_array = [&](const char* k) {
    if (has(body, k) && !(body.at(k).is_array() && body.at(k).empty()))
      refuse(k, std::string("'") + k + "' is not supported: these models call no tools");
  };
  empty_array("tools");
  empty_array("functions");
  for (const char* k : {"tool_choice", "function_call"})
    if (has(body, k) && !(body.at(k).is_string() && (body.at(k) == "none" || body.at(k) == "auto")))
      refuse(k, std::string("'") + k + "' must be \"none\" or \"auto\": these models call no tools");
  if (has(body, "response_format")) {
    const json& rf = body.at("response_format");
    if (!rf.is_object() || !rf.contains("type") || rf.at("type") != "text" || rf.size() != 1)
      refuse("response_format", "'response_format' must be {\"type\": \"text\"}: JSON modes are not enforced here");
  }
  if (has(body, "modalities")) {
    const json& m = body.at("modalities");
    if (!m.is_array() || m.size() != 1 || m[0] != "text")
      refuse("modalities", "'modalities' must be [\"text\"]: chat answers are text (images come from /v1/images)");
  }
  for (const char* k : {"audio", "prediction", "web_search_options"})
    if (has(body, k)) refuse(k, std::string("'") + k + "' is not supported here");
  if (has(body, "metadata") && !body.at("metadata").is_object())
    throw ApiError(400, "'metadata' must be an object", "metadata", "invalid_type");
  if (get_bool(body, "store").value_or(false)) refuse("store", "'store' must be false: the server keeps no completions");
  accept_only(body, "service_tier", {"auto", "default"}, "one tier serves every request");
  accept_only(body, "reasoning_effort", {}, "these models do not reason in hidden tokens");
  accept_only(body, "verbosity", {"medium"}, "the answer length follows max_tokens and the prompt");
  if (get_bool(body, "logprobs").value_or(false))
    refuse("logprobs", "'logprobs' is not supported: answers carry no log probabilities");
  if (get_int(body, "top_logprobs", 0, 20).value_or(0) != 0)
    refuse("top_logprobs", "'top_logprobs' needs logprobs, which are not supported");
}

std::vector<std::string> parse_stop(const json& body) {
  std::vector<std::string> stop;
  if (!has(body, "stop")) return stop;
  const json& v = body.at("stop");
  if (v.is_string()) {
    stop.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > 4) refuse("stop", "'stop' holds at most 4 strings, got " + std::to_string(v.size()), "invalid_value");
    for (const json& x : v) {
      if (!x.is_string()) throw ApiError(400, "'stop' must be a string or an array of strings", "stop", "invalid_type");
      stop.push_back(x.get<std::string>());
    }
  } else {
    throw ApiError(400, "'stop' must be a string or an array of strings", "stop", "invalid_type");
  }
  for (const auto& x : stop) {
    if (x.empty()) refuse("stop", "a stop string must not be empty", "invalid_value");
    if (x.size() > 256 || !valid_utf8(x)) refuse("stop", "a stop string must be valid UTF-8 of at most 256 bytes", "invalid_value");
  }
  return stop;
}

std::vector<std::pair<int64_t, double>> parse_logit_bias(const json& body, int64_t vocab) {
  std::vector<std::pair<int64_t, double>> bias;
  if (!has(body, "logit_bias")) return bias;
  const json& v = body.at("logit_bias");
  if (!v.is_object()) throw ApiError(400, "'logit_bias' must be an object of token id -> bias", "logit_bias", "invalid_type");
  if (v.size() > 1024) refuse("logit_bias", "'logit_bias' names more than 1024 tokens", "invalid_value");
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    const bool digits = !k.empty() && k.size() <= 9 && k.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) refuse("logit_bias", "'logit_bias' keys must be token ids, got \"" + k.substr(0, 32) + "\"", "invalid_value");
    const int64_t id = std::stoll(k);
    if (vocab > 0 && id >= vocab)
      refuse("logit_bias", "token id " + k + " is outside the vocabulary (0.." + std::to_string(vocab - 1) + ")", "invalid_value");
    if (!it.value().is_number()) throw ApiError(400, "'logit_bias' values must be numbers", "logit_bias", "invalid_type");
    const double b = it.value().get<double>();
    if (!std::isfinite(b) || b < -100 || b > 100) refuse("logit_bias", "'logit_bias' values must be in -100..100", "invalid_value");
    bias.emplace_back(id, b);
  }
  return bias;
}

// One message's content: a string, or parts (text, image_url; refusal parts of assistant turns).
// Images are decoded here (data: URIs only).
ChatTurn parse_message(const json& msg, const std::string& mp, const Limits& limits, int64_t& total_bytes) {
  if (!msg.is_object()) throw ApiError(400, "each message must be an object", mp, "invalid_type");
  if (!msg.contains("role") || !msg["role"].is_string())
    throw ApiError(400, "each message needs a string 'role'", mp + ".role", "missing_required_parameter");
  std::string role = msg["role"];
  if (role == "tool" || role == "function")
    refuse(mp + ".role", "'" + role + "' messages are not supported: these models call no tools");
  if (role == "developer") role = "system";  // OpenAI's newer name for the same turn
  if (role != "system" && role != "user" && role != "assistant")
    throw ApiError(400, "the role must be \"system\", \"developer\", \"user\" or \"assistant\", got \"" + role + "\"",
                   mp + ".role", "invalid_value");
  for (auto it = msg.begin(); it != msg.end(); ++it) {
    const std::string& k = it.key();
    if (k == "role" || k == "content" || k == "name") continue;
    if (role == "assistant" && (k == "refusal" || k == "tool_calls" || k == "function_call" || k == "audio")) {
      if (it.value().is_null() || (k == "tool_calls" && it.value().is_array() && it.value().empty()) ||
          (k == "refusal" && it.value().is_string()))
        continue;
      refuse(mp + "." + k, "'" + k + "' in an assistant message is not supported: these models call no tools");
    }
    throw ApiError(400, "unknown field '" + k + "'", mp + "." + k, "unknown_parameter");
  }
  if (msg.contains("name") && !msg["name"].is_null() && !msg["name"].is_string())
    throw ApiError(400, "'name' must be a string", mp + ".name", "invalid_type");
  ChatTurn turn{role, {}};
  auto add_text = [&](const std::string& t, const std::string& param) {
    total_bytes += static_cast<int64_t>(t.size());
    if (total_bytes > limits.max_prompt_bytes)
      throw ApiError(400, "the messages' text is more than the limit of " + std::to_string(limits.max_prompt_bytes) + " bytes",
                     param, "prompt_too_long");
    turn.parts.push_back(ChatPart::make_text(check_text(t, param, limits, false)));
  };
  if (!msg.contains("content") || msg["content"].is_null()) {
    if (role != "assistant") throw ApiError(400, "the message has no content", mp + ".content", "missing_required_parameter");
    return turn;
  }
  const json& content = msg["content"];
  if (content.is_string()) {
    add_text(content.get<std::string>(), mp + ".content");
    return turn;
  }
  if (!content.is_array()) throw ApiError(400, "'content' must be a string or an array of parts", mp + ".content", "invalid_type");
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string pp = mp + ".content[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      throw ApiError(400, "a content part must be an object with a 'type'", pp, "invalid_type");
    const std::string type = part["type"];
    auto only_keys = [&](std::initializer_list<const char*> keys) {
      for (auto it = part.begin(); it != part.end(); ++it) {
        bool known = false;
        for (const char* k : keys) known = known || it.key() == k;
        if (!known) throw ApiError(400, "unknown field '" + it.key() + "'", pp + "." + it.key(), "unknown_parameter");
      }
    };
    if (type == "text" || (type == "refusal" && role == "assistant")) {
      const char* key = type == "text" ? "text" : "refusal";
      if (!part.contains(key) || !part[key].is_string())
        throw ApiError(400, std::string("a ") + type + " part needs a string '" + key + "'", pp + "." + key, "invalid_type");
      only_keys({"type", key});
      add_text(part[key].get<std::string>(), pp + "." + key);
    } else if (type == "image_url") {
      if (role != "user") refuse(pp, "only user messages may hold images", "invalid_value");
      if (!part.contains("image_url"))
        throw ApiError(400, "an image_url part needs 'image_url'", pp + ".image_url", "missing_required_parameter");
      only_keys({"type", "image_url"});
      const json& iu = part["image_url"];
      std::string uri, param;
      if (iu.is_string()) {
        uri = iu.get<std::string>(), param = pp + ".image_url";
      } else if (iu.is_object() && iu.contains("url") && iu["url"].is_string()) {
        for (auto it = iu.begin(); it != iu.end(); ++it)
          if (it.key() != "url" && it.key() != "detail")
            throw ApiError(400, "unknown field '" + it.key() + "'", pp + ".image_url." + it.key(), "unknown_parameter");
        // "detail" changes nothing: each model sizes images by its own processor.
        accept_only(iu, "detail", {"auto", "low", "high"}, "each model sizes images by its own processor");
        uri = iu["url"].get<std::string>(), param = pp + ".image_url.url";
      } else {
        throw ApiError(400, "'image_url' must be {\"url\": \"data:image/...;base64,...\"}", pp + ".image_url", "invalid_type");
      }
      turn.parts.push_back(ChatPart::make_image(decode_upload(decode_data_uri(uri, param, limits), param, limits)));
    } else if (type == "input_audio" || type == "file") {
      refuse(pp + ".type", "'" + type + "' parts are not supported: messages take text and image_url parts");
    } else {
      throw ApiError(400, "content part type must be \"text\" or \"image_url\", got \"" + type + "\"", pp + ".type",
                     "invalid_value");
    }
  }
  return turn;
}

}  // namespace

ChatRequest parse_chat(const json& body, const Catalog& catalog, const Limits& limits) {
  check_fields(body, chat_schema());
  ChatRequest r;
  const ModelCaps& m = pick_model(body, catalog, &ModelCaps::chat, "/v1/chat/completions");
  r.model = m.id;
  check_chat_noops(body);
  r.stream = get_bool(body, "stream").value_or(false);
  if (has(body, "stream_options")) {
    const json& so = body.at("stream_options");
    if (!so.is_object()) throw ApiError(400, "'stream_options' must be an object", "stream_options", "invalid_type");
    for (auto it = so.begin(); it != so.end(); ++it) {
      // include_obfuscation pads chunks against length side channels; nothing here to pad, so
      // either value is accepted.
      if (it.key() != "include_usage" && it.key() != "include_obfuscation")
        throw ApiError(400, "unknown field '" + it.key() + "'", "stream_options." + it.key(), "unknown_parameter");
      if (!it.value().is_boolean() && !it.value().is_null())
        throw ApiError(400, "'" + it.key() + "' must be a boolean", "stream_options." + it.key(), "invalid_type");
    }
    if (!r.stream) refuse("stream_options", "'stream_options' applies only when 'stream' is true", "invalid_value");
    r.include_usage = get_bool(so, "include_usage").value_or(false);
  }
  ChatOptions& o = r.options;
  o.max_new_tokens = std::min(m.chat_max_tokens, limits.max_tokens);
  if (auto t = get_int(body, "max_tokens", 1, limits.max_tokens)) o.max_new_tokens = *t;
  if (auto t = get_int(body, "max_completion_tokens", 1, limits.max_tokens)) o.max_new_tokens = *t;
  o.temperature = get_num(body, "temperature", 0, 2);
  o.top_p = get_num(body, "top_p", 0, 1);
  o.top_k = get_int(body, "top_k", 0, 1 << 20);
  if (o.top_k && *o.top_k == 0) o.top_k.reset();  // 0 = off, as absent
  o.min_p = get_num(body, "min_p", 0, 1);
  o.repetition_penalty = get_num(body, "repetition_penalty", 0.01, 100);
  o.presence_penalty = get_num(body, "presence_penalty", -2, 2).value_or(0);
  o.frequency_penalty = get_num(body, "frequency_penalty", -2, 2).value_or(0);
  o.logit_bias = parse_logit_bias(body, m.vocab_size);
  o.stop = parse_stop(body);
  if (auto seed = get_int(body, "seed", INT64_MIN, INT64_MAX)) r.seed = static_cast<uint64_t>(*seed);
  r.n = get_int(body, "n", 1, 4).value_or(1);

  if (!has(body, "messages")) throw ApiError(400, "'messages' is required", "messages", "missing_required_parameter");
  const json& msgs = body.at("messages");
  if (!msgs.is_array() || msgs.empty()) throw ApiError(400, "'messages' must be a non-empty array", "messages", "invalid_type");
  if (msgs.size() > 256) refuse("messages", "at most 256 messages are accepted", "limit_exceeded");
  int64_t text_bytes = 0;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string mp = "messages[" + std::to_string(i) + "]";
    if (msgs[i].is_object() && msgs[i].contains("content") && msgs[i]["content"].is_array())
      for (const json& part : msgs[i]["content"])
        if (part.is_object() && part.contains("type") && part["type"] == "image_url" && ++r.images > std::min(m.chat_images, limits.max_images))
          refuse(mp + ".content", std::string(model_name(m.id)) + " takes at most " +
                                      std::to_string(std::min(m.chat_images, limits.max_images)) + " image(s) in a conversation",
                 "limit_exceeded");
    r.turns.push_back(parse_message(msgs[i], mp, limits, text_bytes));
    if (r.turns.back().role == "system" && i != 0) {
      // Qwen's templates render a later system turn as a turn of its own; OpenAI clients put
      // system messages first, and a later one is most often a mistake.
      refuse(mp + ".role", "a system (or developer) message may only come first", "invalid_value");
    }
  }
  if (r.turns.back().role != "user")
    refuse("messages", "the last message must be the user's (the model answers it)", "invalid_value");
  bool user_text = false;
  for (const ChatTurn& t : r.turns)
    for (const ChatPart& p : t.parts) user_text = user_text || (t.role == "user" && !p.is_image && !p.text.empty());
  if (!user_text) refuse("messages", "the conversation has no user text", "invalid_value");
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

}  // namespace omniflux::server
