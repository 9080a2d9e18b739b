// libFuzzer target for the server's request validation (tools/server/api.cpp, the multipart parser
// and the upload decoders; no engine): JSON bodies of every endpoint and edit forms, against a
// catalog that serves all three models as omniflux-server does. Input: the first byte picks the
// endpoint (generations, chat completions, edits), the rest is the body (for edits a multipart body
// with boundary "B"). Invariants: a refusal is an ApiError with a 4xx status (anything else would
// reach the client as a 500); an accepted request is within every limit.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "api.h"

namespace {

using namespace omniflux::server;

Catalog serving_catalog() {
  Catalog c;
  ModelCaps u;  // the values Engine::load sets (tools/server/engine.cpp), with tiny vocabularies
  u.id = ModelId::UniWorld;
  u.generations = u.edits = u.chat = true;
  u.seed = 42;
  u.chat_images = 4;
  u.chat_max_tokens = 128;
  u.vocab_size = 300;
  ModelCaps x;
  x.id = ModelId::XOmni;
  x.generations = x.chat = true;
  x.width = x.height = 1152;
  x.guidance = 1.0;
  x.chat_images = 1;
  x.vocab_size = 300;
  ModelCaps f;
  f.id = ModelId::Flux;
  f.generations = true;
  c.models = {u, x, f};
  return c;
}

Limits small_limits() {
  Limits l;  // small uploads, so decoding stays fast
  l.max_image_bytes = 4096;
  l.max_image_pixels = 64 * 64;
  l.max_prompt_bytes = 512;
  return l;
}

void check_image_request(const ImageRequest& r, const Limits& l) {
  if (r.width < 16 || r.height < 16 || r.width * r.height > l.max_pixels || r.n < 1 || r.n > l.max_n ||
      r.steps < 0 || r.steps > l.max_steps || static_cast<int64_t>(r.prompt.size()) > l.max_prompt_bytes ||
      static_cast<int64_t>(r.images.size()) > l.max_images || (r.edit && r.images.empty()))
    std::abort();
  for (const auto& im : r.images)
    if (im.width < 1 || im.height < 1 || int64_t(im.width) * im.height > l.max_image_pixels ||
        im.rgb.size() != size_t(im.width) * size_t(im.height) * 3)
      std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const Catalog catalog = serving_catalog();
  static const Limits limits = small_limits();
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 3) {
      case 0: check_image_request(parse_image_generation(parse_json_body(body), catalog, limits), limits); break;
      case 1: {
        const ChatRequest r = parse_chat(parse_json_body(body), catalog, limits);
        if (r.turns.empty() || r.n < 1 || r.options.max_new_tokens < 1 || r.options.max_new_tokens > limits.max_tokens ||
            r.images > limits.max_images)
          std::abort();
        break;
      }
      default: {
        FormLimits f;
        f.max_images = limits.max_images;
        f.max_image_bytes = limits.max_image_bytes;
        f.max_field_bytes = limits.max_prompt_bytes;
        check_image_request(parse_image_edit(parse_multipart(body, "multipart/form-data; boundary=B", f), catalog, limits),
                            limits);
      }
    }
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status > 499) std::abort();
  }
  return 0;
}
