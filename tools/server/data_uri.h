#pragma once
// base64 (RFC 4648) and data: URIs, without the engine: the server's chat images arrive this way,
// and tests/fuzz/fuzz_data_uri.cpp fuzzes these alone.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "api_error.h"

namespace omniflux::server {

// "data:image/png;base64,...." -> bytes; ApiError naming `param` otherwise (413 when the decoded
// bytes would exceed max_image_bytes, checked before decoding).
std::string decode_data_uri(const std::string& uri, const std::string& param, int64_t max_image_bytes);

std::string base64_encode(const std::string& bytes);
std::string base64_encode(const uint8_t* data, size_t size);
// Strict RFC 4648 (padding required, no whitespace); nullopt when malformed.
std::optional<std::string> base64_decode(const std::string& text);

}  // namespace omniflux::server
