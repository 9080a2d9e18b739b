#include "data_uri.h"

namespace omniflux::server {

std::string decode_data_uri(const std::string& uri, const std::string& param, int64_t max_image_bytes) {
  if (uri.rfind("data:", 0) != 0)
    throw ApiError(400, "only data: URIs are accepted (the server fetches nothing)", param, "invalid_image_url");
  const size_t comma = uri.find(',');
  if (comma == std::string::npos) throw ApiError(400, "a data: URI needs a ',' before its data", param, "invalid_image_url");
  const std::string meta = uri.substr(5, comma - 5);
  if (meta.rfind("image/", 0) != 0 || meta.size() < 7 || meta.compare(meta.size() - 7, 7, ";base64") != 0)
    throw ApiError(400, "expected data:image/<type>;base64,<data>, got data:" + meta.substr(0, 64) + ",...", param,
                   "invalid_image_url");
  const size_t n = uri.size() - comma - 1;
  if (static_cast<int64_t>(n / 4 * 3) > max_image_bytes + 2)
    throw ApiError(413, "image is larger than the limit of " + std::to_string(max_image_bytes) + " bytes", param,
                   "image_too_large");
  auto bytes = base64_decode(uri.substr(comma + 1));
  if (!bytes) throw ApiError(400, "the data: URI's base64 is malformed", param, "invalid_image_url");
  return *bytes;
}

std::string base64_encode(const uint8_t* data, size_t size) {
  static const char* tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < size; i += 3) {
    const uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8) | data[i + 2];
    out += tab[v >> 18], out += tab[(v >> 12) & 63], out += tab[(v >> 6) & 63], out += tab[v & 63];
  }
  if (i + 1 == size) {
    const uint32_t v = uint32_t(data[i]) << 16;
    out += tab[v >> 18], out += tab[(v >> 12) & 63], out += "==";
  } else if (i + 2 == size) {
    const uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8);
    out += tab[v >> 18], out += tab[(v >> 12) & 63], out += tab[(v >> 6) & 63], out += '=';
  }
  return out;
}

std::string base64_encode(const std::string& bytes) {
  return base64_encode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

std::optional<std::string> base64_decode(const std::string& text) {
  if (text.size() % 4) return std::nullopt;
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + k];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad) return std::nullopt;  // data after '='
      v[k] = val(c);
      if (v[k] < 0) return std::nullopt;
    }
    const uint32_t x = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out += static_cast<char>(x >> 16);
    if (pad < 2) out += static_cast<char>((x >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(x & 0xff);
  }
  return out;
}

}  // namespace omniflux::server
