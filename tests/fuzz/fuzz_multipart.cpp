// libFuzzer target for the server's multipart/form-data parser (tools/server/multipart.cpp, no
// engine, no LibTorch). Input: a Content-Type line, '\n', then the body; the body's first byte also
// picks a read size. Invariants: the body parsed in one piece and in reads of that size ends alike
// (the same parts, or the same refusal); refusals are ApiErrors with status 400 or 413; every part
// respects the limits.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "multipart.h"

namespace {

struct Outcome {
  std::vector<omniflux::server::FormPart> parts;
  int status = 0;
  std::string code, message, param;
};

Outcome parse(const std::string& content_type, const std::string& body, size_t piece,
              const omniflux::server::FormLimits& limits) {
  using namespace omniflux::server;
  Outcome o;
  try {
    MultipartParser p(multipart_boundary(content_type), limits);
    for (size_t i = 0; i < body.size(); i += piece) p.feed(body.data() + i, std::min(piece, body.size() - i));
    o.parts = p.finish();
  } catch (const ApiError& e) {
    if (e.status != 400 && e.status != 413) std::abort();
    o.status = e.status;
    o.code = e.code;
    o.message = e.message;
    o.param = e.param;
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace omniflux::server;
  const std::string in(reinterpret_cast<const char*>(data), size);
  const size_t nl = in.find('\n');
  const std::string content_type = in.substr(0, nl);
  const std::string body = nl == std::string::npos ? std::string() : in.substr(nl + 1);
  FormLimits limits;  // small, so that every limit is within reach of a short input
  limits.max_parts = 6;
  limits.max_images = 2;
  limits.max_image_bytes = 300;
  limits.max_field_bytes = 100;
  limits.max_part_head_bytes = 200;
  const Outcome whole = parse(content_type, body, body.size() + 1, limits);
  const size_t piece = body.empty() ? 1 : static_cast<unsigned char>(body[0]) % 61 + 1;
  const Outcome split = parse(content_type, body, piece, limits);
  if (whole.status != split.status || whole.code != split.code || whole.message != split.message ||
      whole.param != split.param || whole.parts.size() != split.parts.size())
    std::abort();
  int64_t images = 0;
  for (size_t i = 0; i < whole.parts.size(); ++i) {
    const FormPart &a = whole.parts[i], &b = split.parts[i];
    if (a.name != b.name || a.filename != b.filename || a.content_type != b.content_type || a.data != b.data) std::abort();
    const bool image = a.name == "image" || a.name == "image[]";
    images += image;
    if (a.name.empty() || static_cast<int64_t>(a.data.size()) > (image ? limits.max_image_bytes : limits.max_field_bytes))
      std::abort();
  }
  if (images > limits.max_images || static_cast<int64_t>(whole.parts.size()) > limits.max_parts) std::abort();
  return 0;
}
