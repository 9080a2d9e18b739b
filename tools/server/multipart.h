#pragma once
// multipart/form-data (RFC 7578 over RFC 2046), parsed by us rather than by the HTTP library so
// that the routes take parsed parts whatever the transport, and so that the parser is fuzzed
// (tests/fuzz/fuzz_multipart.cpp). Streaming: bytes are fed as they arrive and the first part
// that breaks a limit is refused at once, before the rest of the body is read. No LibTorch.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "api_error.h"

namespace omniflux::server {

// One part of a multipart/form-data body.
struct FormPart {
  std::string name, filename, content_type, data;
};

struct FormLimits {
  int64_t max_parts = 64;
  int64_t max_images = 4;                  // parts named "image" or "image[]"
  int64_t max_image_bytes = 16ll << 20;    // one image part
  int64_t max_field_bytes = 16384;         // any other part
  int64_t max_part_head_bytes = 16 << 10;  // the headers of one part
};

// The boundary parameter of a multipart/form-data Content-Type; ApiError 400 when it is missing
// or not 1..70 characters (RFC 2046).
std::string multipart_boundary(const std::string& content_type);

class MultipartParser {
 public:
  MultipartParser(const std::string& boundary, const FormLimits& limits);
  // Throws ApiError (400 or 413, naming the part) as soon as the bytes so far break the syntax or
  // a limit.
  void feed(const char* data, size_t size);
  // The parts once the closing delimiter was seen; ApiError 400 when the body ended before it.
  std::vector<FormPart> finish();

 private:
  enum class State { Delimiter, AfterDelimiter, Head, Data, Done };
  void step();
  void parse_head(const std::string& head);
  void append_data(const char* data, size_t size);

  std::string delimiter_;  // "\r\n--" + boundary
  FormLimits limits_;
  State state_ = State::Delimiter;
  std::string buf_;        // bytes not yet consumed
  size_t preamble_ = 0;    // bytes dropped before the first delimiter
  int64_t images_ = 0;
  std::vector<FormPart> parts_;
};

// The whole body at once (tests, the fuzz target): the same parser fed in one piece.
std::vector<FormPart> parse_multipart(const std::string& body, const std::string& content_type,
                                      const FormLimits& limits);

}  // namespace omniflux::server
