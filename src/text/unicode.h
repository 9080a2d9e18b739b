#pragma once
// UTF-8 and Unicode helpers shared by the tokenizers (internal).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace omniflux::text::detail {

constexpr size_t kNoError = static_cast<size_t>(-1);

// Offset of the first byte that starts an ill-formed sequence (RFC 3629: no overlongs, no
// surrogates, nothing above U+10FFFF), or kNoError.
size_t find_invalid_utf8(std::string_view s);

// Decodes the code point at s[i] (s must be valid UTF-8) and advances i past it.
inline char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const int n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

void append_utf8(std::string& out, char32_t cp);

// Bytes to text the way Python's bytes.decode("utf-8", errors="replace") and Rust's
// String::from_utf8_lossy do: each maximal ill-formed subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

bool is_ascii(std::string_view s);

// Unicode NFC (utf8proc). `s` must be valid UTF-8.
std::string nfc(std::string_view s);

// Unicode White_Space (what \s means in Oniguruma and in Python's regex module).
bool is_white_space(char32_t c);
// Python's str.isspace(): White_Space plus U+001C..U+001F (what \s means in Python's re module).
bool is_python_space(char32_t c);

// Python's str.lower(): full lower-case mapping (U+0130 becomes "i\u0307") and the final-sigma rule.
std::string python_lower(std::string_view s);

}  // namespace omniflux::text::detail
