#include "multipart.h"

#include <algorithm>
#include <cctype>
#include <utility>

namespace omniflux::server {

namespace {

ApiError malformed(const std::string& why) {
  return ApiError(400, "malformed multipart/form-data body: " + why, "", "invalid_multipart");
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

bool is_image(const std::string& name) { return name == "image" || name == "image[]"; }

// `; key=value; key="quoted \" value"` from `pos` on (RFC 7231 parameters; quoted-string escapes
// as RFC 7230). Keys lower-cased; the first of a repeated key wins. Throws on a malformed list,
// `what` naming the header.
std::vector<std::pair<std::string, std::string>> parameters(const std::string& s, size_t pos, const char* what) {
  std::vector<std::pair<std::string, std::string>> out;
  auto bad = [&] { return ApiError(400, std::string("malformed parameters in ") + what, "", "invalid_multipart"); };
  while (pos < s.size()) {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == ';')) ++pos;
    if (pos >= s.size()) break;
    const size_t eq = s.find_first_of("=;", pos);
    std::string key = lower(trim(s.substr(pos, eq == std::string::npos ? std::string::npos : eq - pos)));
    if (key.empty()) throw bad();
    std::string value;
    if (eq == std::string::npos || s[eq] == ';') {
      pos = eq == std::string::npos ? s.size() : eq;
    } else {
      pos = eq + 1;
      while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t')) ++pos;
      if (pos < s.size() && s[pos] == '"') {
        bool closed = false;
        for (++pos; pos < s.size(); ++pos) {
          if (s[pos] == '\\' && pos + 1 < s.size()) {
            value += s[++pos];
          } else if (s[pos] == '"') {
            closed = true;
            ++pos;
            break;
          } else {
            value += s[pos];
          }
        }
        if (!closed) throw bad();
        while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t')) ++pos;
        if (pos < s.size() && s[pos] != ';') throw bad();
      } else {
        const size_t end = s.find(';', pos);
        value = trim(s.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
        pos = end == std::string::npos ? s.size() : end;
      }
    }
    if (std::none_of(out.begin(), out.end(), [&](const auto& kv) { return kv.first == key; }))
      out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

}  // namespace

std::string multipart_boundary(const std::string& content_type) {
  const size_t semi = content_type.find(';');
  std::string boundary;
  if (semi != std::string::npos)
    for (auto& [k, v] : parameters(content_type, semi, "Content-Type"))
      if (k == "boundary") boundary = v;
  // RFC 2046: 1..70 of these characters, not ending with a space.
  static const std::string bchars =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ";
  if (boundary.empty() || boundary.size() > 70 || boundary.back() == ' ' ||
      boundary.find_first_not_of(bchars) != std::string::npos)
    throw ApiError(400, "multipart/form-data needs a boundary parameter of 1 to 70 characters (RFC 2046)", "",
                   "invalid_multipart");
  return boundary;
}

// The body is read as if it began with CRLF, so the first delimiter is found like every other.
MultipartParser::MultipartParser(const std::string& boundary, const FormLimits& limits)
    : delimiter_("\r\n--" + boundary), limits_(limits), buf_("\r\n") {}

void MultipartParser::feed(const char* data, size_t size) {
  if (state_ == State::Done) return;  // the epilogue is ignored (the transport bounds its size)
  buf_.append(data, size);
  step();
}

void MultipartParser::step() {
  for (;;) {
    switch (state_) {
      case State::Delimiter: {  // the preamble, before the first delimiter
        // Limits are checked so that the outcome never depends on how the body was split into
        // reads (tests/fuzz/fuzz_multipart.cpp checks that).
        const size_t p = buf_.find(delimiter_);
        const size_t keep = delimiter_.size() - 1;
        if (p == std::string::npos && buf_.size() > keep) {
          preamble_ += buf_.size() - keep;
          buf_.erase(0, buf_.size() - keep);
        }
        if (static_cast<int64_t>(preamble_ + (p == std::string::npos ? 0 : p)) > limits_.max_part_head_bytes)
          throw malformed("no opening boundary");
        if (p == std::string::npos) return;
        buf_.erase(0, p + delimiter_.size());
        state_ = State::AfterDelimiter;
        break;
      }
      case State::AfterDelimiter: {  // "--" closes; else optional padding, then CRLF
        if (buf_.size() < 2) return;
        if (buf_.compare(0, 2, "--") == 0) {
          state_ = State::Done;
          buf_.clear();
          return;
        }
        const size_t p = buf_.find_first_not_of(" \t");
        if ((p == std::string::npos ? buf_.size() : p) > 256) throw malformed("padding after a boundary");
        if (p == std::string::npos || buf_.size() - p < 2) return;
        if (buf_.compare(p, 2, "\r\n") != 0) throw malformed("a boundary is not followed by CRLF");
        buf_.erase(0, p + 2);
        state_ = State::Head;
        break;
      }
      case State::Head: {
        // An empty head is a lone CRLF; otherwise the head ends at the first blank line.
        size_t end = buf_.compare(0, 2, "\r\n") == 0 ? 0 : buf_.find("\r\n\r\n");
        if (end == std::string::npos) {  // a head of the limit may still be followed by its blank line
          if (static_cast<int64_t>(buf_.size()) > limits_.max_part_head_bytes + 3) throw malformed("a part's headers are too long");
          return;
        }
        if (static_cast<int64_t>(end) > limits_.max_part_head_bytes) throw malformed("a part's headers are too long");
        parse_head(buf_.substr(0, end));
        buf_.erase(0, end == 0 ? 2 : end + 4);
        state_ = State::Data;
        break;
      }
      case State::Data: {
        const size_t p = buf_.find(delimiter_);
        if (p == std::string::npos) {
          // Keep what could be the start of a delimiter split across two reads.
          const size_t keep = std::min(buf_.size(), delimiter_.size() - 1);
          append_data(buf_.data(), buf_.size() - keep);
          buf_.erase(0, buf_.size() - keep);
          return;
        }
        append_data(buf_.data(), p);
        buf_.erase(0, p + delimiter_.size());
        state_ = State::AfterDelimiter;
        break;
      }
      case State::Done: return;
    }
  }
}

void MultipartParser::parse_head(const std::string& head) {
  if (static_cast<int64_t>(parts_.size()) >= limits_.max_parts)
    throw ApiError(400, "more than " + std::to_string(limits_.max_parts) + " form fields", "", "invalid_multipart");
  FormPart part;
  bool disposition = false;
  size_t pos = 0;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string::npos) eol = head.size();
    const std::string line = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.empty() || line[0] == ' ' || line[0] == '\t') throw malformed("folded or empty part header line");
    const size_t colon = line.find(':');
    if (colon == std::string::npos) throw malformed("a part header line without ':'");
    const std::string name = lower(trim(line.substr(0, colon)));
    const std::string value = trim(line.substr(colon + 1));
    if (name == "content-disposition") {
      const size_t semi = value.find(';');
      if (lower(trim(value.substr(0, semi))) != "form-data")
        throw malformed("a part's Content-Disposition is not form-data");
      if (semi != std::string::npos)
        for (auto& [k, v] : parameters(value, semi, "Content-Disposition")) {
          if (k == "name") part.name = v;
          if (k == "filename") part.filename = v;
        }
      disposition = true;
    } else if (name == "content-type") {
      part.content_type = value;
    }
  }
  if (!disposition || part.name.empty()) throw malformed("a part without Content-Disposition: form-data; name=...");
  if (is_image(part.name) && ++images_ > limits_.max_images)
    throw ApiError(400, "more than " + std::to_string(limits_.max_images) + " images given", "image", "limit_exceeded");
  parts_.push_back(std::move(part));
}

void MultipartParser::append_data(const char* data, size_t size) {
  FormPart& p = parts_.back();
  const bool img = is_image(p.name);
  const int64_t cap = img ? limits_.max_image_bytes : limits_.max_field_bytes;
  if (static_cast<int64_t>(p.data.size() + size) > cap) {
    if (img)
      throw ApiError(413, "an image part is larger than the limit of " + std::to_string(cap) + " bytes",
                     "image[" + std::to_string(images_ - 1) + "]", "image_too_large");
    throw ApiError(400, "field '" + p.name + "' is longer than the limit of " + std::to_string(cap) + " bytes", p.name,
                   p.name == "prompt" ? "prompt_too_long" : "invalid_value");
  }
  p.data.append(data, size);
}

std::vector<FormPart> MultipartParser::finish() {
  if (state_ != State::Done) throw ApiError(400, "malformed or truncated multipart/form-data body", "", "invalid_multipart");
  return std::move(parts_);
}

std::vector<FormPart> parse_multipart(const std::string& body, const std::string& content_type,
                                      const FormLimits& limits) {
  MultipartParser p(multipart_boundary(content_type), limits);
  p.feed(body.data(), body.size());
  return p.finish();
}

}  // namespace omniflux::server
