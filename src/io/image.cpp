// Image decoding (stb_image), PNG encoding (stb_image_write) with tEXt chunks, PNG tEXt reading.
#include "omniflux/io/image.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <stb_image.h>

#include "io/image_check.h"
#include "omniflux/error.h"
#include "omniflux/io/file_write.h"
#include "omniflux/io/paths.h"

// Defined by stb_image_write's implementation (compiled in stb_impl.c) but not declared in the
// header part of libstb-dev's stb_image_write.h. Returns a malloc'ed buffer.
extern "C" unsigned char* stbi_write_png_to_mem(const unsigned char* pixels, int stride_bytes,
                                                int x, int y, int n, int* out_len);

namespace omniflux {
namespace detail {

std::string size_str(int64_t width, int64_t height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

void check_image_size(int64_t width, int64_t height, const std::string& where, const char* what) {
  if (width <= 0 || height <= 0) {
    throw Error(std::string("empty ") + what, where, "width and height >= 1",
                size_str(width, height));
  }
  if (width > kMaxImageSide || height > kMaxImageSide || width * height > kMaxImagePixels) {
    throw Error(std::string(what) + " too large", where,
                "at most " + std::to_string(kMaxImageSide) + " pixels per side and " +
                    std::to_string(kMaxImagePixels) + " pixels",
                size_str(width, height));
  }
}

void check_image(const Image& image, const std::string& where) {
  check_image_size(image.width, image.height, where, "image");
  const size_t expected = size_t(image.width) * size_t(image.height) * 3;
  if (image.rgb.size() != expected) {
    throw Error("image buffer size does not match its size", where,
                std::to_string(expected) + " bytes (" + size_str(image.width, image.height) +
                    "x3)",
                std::to_string(image.rgb.size()) + " bytes");
  }
}

}  // namespace detail

namespace {

constexpr const char* kFormats = "PNG, JPEG, BMP, GIF, TGA, PSD or PNM";
constexpr uint8_t kPngSignature[8] = {137, 80, 78, 71, 13, 10, 26, 10};

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown stb_image failure";
}

struct StbFree {
  void operator()(unsigned char* p) const { stbi_image_free(p); }
};
struct CFree {
  void operator()(unsigned char* p) const { std::free(p); }
};
struct FileClose {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

std::vector<uint8_t> read_whole_file(const std::string& path, const char* what) {
  require_regular_file(path, what);  // a FIFO or device would be read forever
  std::unique_ptr<std::FILE, FileClose> f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    throw Error(std::string("cannot open ") + what, path, "a readable file",
                std::strerror(errno));
  }
  std::vector<uint8_t> data;
  std::array<uint8_t, 1 << 16> chunk;
  for (;;) {
    const size_t n = std::fread(chunk.data(), 1, chunk.size(), f.get());
    data.insert(data.end(), chunk.begin(), chunk.begin() + n);
    // stb_image takes an int length; stop before reading an absurd file into memory.
    if (data.size() > size_t(INT_MAX)) {
      throw Error(std::string(what) + " too large", path, "at most 2147483647 bytes",
                  "a larger file");
    }
    if (n < chunk.size()) break;
  }
  if (std::ferror(f.get())) {
    throw Error(std::string("cannot read ") + what, path, "a readable file", std::strerror(errno));
  }
  return data;
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(uint8_t(v >> 24));
  out.push_back(uint8_t(v >> 16));
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}

// CRC-32 as PNG defines it (ISO 3309, reflected polynomial 0xEDB88320), over type + data.
uint32_t crc32(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

bool is_radiance_hdr(const uint8_t* data, size_t size) {
  auto starts = [&](const char* magic) {
    const size_t n = std::strlen(magic);
    return size >= n && std::memcmp(data, magic, n) == 0;
  };
  return starts("#?RADIANCE") || starts("#?RGBE");
}

bool is_png(const uint8_t* data, size_t size) {
  return size >= 8 && std::memcmp(data, kPngSignature, 8) == 0;
}

// Walks a PNG's chunks and checks its structure: signature, IHDR first, every length and CRC
// (stb_image checks no CRC), and an IEND chunk. Calls on_chunk(type, body, length, offset) for
// each chunk up to and including IEND; bytes after IEND are ignored.
template <class OnChunk>
void walk_png_chunks(const uint8_t* data, size_t size, const std::string& name,
                     OnChunk&& on_chunk) {
  if (data == nullptr || !is_png(data, size)) {
    throw Error("not a PNG file", name, "the 8-byte PNG signature",
                size < 8 ? std::to_string(size) + " bytes" : "other bytes");
  }
  size_t pos = 8;
  for (bool first = true;; first = false) {
    if (size - pos < 12) {
      throw Error("truncated PNG", name,
                  "a chunk (12 bytes or more) at byte " + std::to_string(pos),
                  std::to_string(size - pos) + " bytes left");
    }
    const uint32_t len = read_be32(data + pos);
    const uint8_t* type = data + pos + 4;
    const std::string type_str(reinterpret_cast<const char*>(type), 4);
    const std::string at = name + ": chunk at byte " + std::to_string(pos);
    if (len > uint32_t(INT32_MAX)) {
      throw Error("bad PNG chunk length", at, "at most 2^31-1", std::to_string(len));
    }
    if (size - pos - 12 < len) {
      throw Error("truncated PNG", at, std::to_string(len) + " data bytes and a CRC",
                  std::to_string(size - pos - 12) + " bytes left");
    }
    for (uint8_t ch : type_str) {
      if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'))) {
        throw Error("bad PNG chunk type", at, "4 ASCII letters", "byte " + std::to_string(ch));
      }
    }
    const uint32_t stored = read_be32(data + pos + 8 + len);
    const uint32_t computed = crc32(type, 4 + size_t(len));
    if (stored != computed) {
      throw Error("PNG chunk CRC mismatch (corrupt file)", at + " (" + type_str + ")",
                  hex32(computed), hex32(stored));
    }
    if (first && type_str != "IHDR") {
      throw Error("PNG does not start with IHDR", name, "IHDR", type_str);
    }
    on_chunk(type_str, data + pos + 8, len, pos);
    if (type_str == "IEND") return;
    pos += 12 + size_t(len);
  }
}

// The IHDR fields the PNG spec allows (stb_image reads all of them). Checked here because stbi_info
// reports a bad PNG header as "unknown image type" after trying the other formats.
void check_png_format(int depth, int colour, int compression, int filter, int interlace,
                      const std::string& name) {
  bool ok_depth = false;
  switch (colour) {
    case 0: ok_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16; break;
    case 3: ok_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8; break;
    case 2: case 4: case 6: ok_depth = depth == 8 || depth == 16; break;
    default:
      throw Error("bad PNG colour type", name, "0, 2, 3, 4 or 6", std::to_string(colour));
  }
  if (!ok_depth) {
    throw Error("bad PNG bit depth for its colour type", name,
                "a depth the PNG spec allows for colour type " + std::to_string(colour),
                std::to_string(depth));
  }
  if (compression != 0 || filter != 0 || interlace > 1) {
    throw Error("bad PNG compression, filter or interlace method", name, "0, 0 and 0 or 1",
                std::to_string(compression) + ", " + std::to_string(filter) + ", " +
                    std::to_string(interlace));
  }
}

// Feeds stb_image from memory through its callback interface, to notice what the memory interface
// hides: stb reads missing bytes as zeros, and its unchecked stbi__getn calls (TGA rows, PNM data)
// leave pixels uninitialised, so a truncated file would decode "successfully".
// stb's first read fills its internal buffer; later reads into that same buffer are refills and
// may come back short near the end, but a refill with nothing left, or a short read straight into
// the caller's buffer (stbi__getn), means the data ended before the decoder was done.
struct StbReader {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  char* refill_buffer = nullptr;
  bool ran_out = false;

  static int read(void* user, char* out, int n) {
    auto* r = static_cast<StbReader*>(user);
    if (r->refill_buffer == nullptr) r->refill_buffer = out;
    const size_t left = r->size - r->pos;
    const size_t k = n > 0 ? std::min(size_t(n), left) : 0;
    if (n > 0 && (left == 0 || (k < size_t(n) && out != r->refill_buffer))) r->ran_out = true;
    std::memcpy(out, r->data + r->pos, k);
    r->pos += k;
    return int(k);
  }
  static void skip(void* user, int n) {
    auto* r = static_cast<StbReader*>(user);
    if (n < 0) {
      r->pos -= std::min(r->pos, size_t(-int64_t(n)));
    } else if (size_t(n) > r->size - r->pos) {
      r->ran_out = true;
      r->pos = r->size;
    } else {
      r->pos += size_t(n);
    }
  }
  static int eof(void* user) {
    auto* r = static_cast<StbReader*>(user);
    return r->pos >= r->size;
  }
};

// Binary PNM (P5 grey, P6 RGB; the only kinds stb reads). stb_image 2.27 does not rescale samples
// when the maximum value is not 255 (PIL does), and garbles 16-bit grey; so only 255 is accepted.
void check_pnm(const uint8_t* data, size_t size, const std::string& name) {
  if (size < 2 || data[0] != 'P' || (data[1] != '5' && data[1] != '6')) return;
  auto space = [](uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
  };
  size_t pos = 2;
  // Same tokenisation as stbi__pnm_info: whitespace and '#' comments, then decimal digits.
  auto number = [&]() -> uint64_t {
    for (;;) {
      while (pos < size && space(data[pos])) ++pos;
      if (pos >= size || data[pos] != '#') break;
      while (pos < size && data[pos] != '\n' && data[pos] != '\r') ++pos;
    }
    uint64_t v = 0;
    while (pos < size && data[pos] >= '0' && data[pos] <= '9' && v < 1000000) {
      v = v * 10 + (data[pos++] - '0');
    }
    return v;
  };
  number();  // width and height are checked through stbi_info
  number();
  const uint64_t maxval = number();
  if (maxval != 255) {
    throw Error("unsupported PNM maximum sample value", name, "255", std::to_string(maxval));
  }
}

// stb_image 2.27 builds each JPEG Huffman table into fixed arrays of 256 symbols without checking
// that the DHT code counts sum to at most 256: a crafted file writes past them (found by fuzzing
// under UBSan). Walk the marker segments as stb does (skipping each segment by its length and each
// scan's entropy-coded data up to the next marker) and refuse such tables. Other problems are left
// to stb.
void check_jpeg_huffman_tables(const uint8_t* data, size_t size, const std::string& name) {
  if (size < 2 || data[0] != 0xFF || data[1] != 0xD8) return;
  size_t pos = 2;
  while (pos < size) {
    // Bytes that are not a marker: stb skips them before the frame header and fails after it;
    // skipping them here too checks at least every table stb reads.
    while (pos < size && data[pos] != 0xFF) ++pos;
    while (pos < size && data[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= size) return;
    const uint8_t marker = data[pos++];
    if (marker == 0xD9) return;                                          // EOI
    if (marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (size - pos < 2) return;
    const size_t len = (size_t(data[pos]) << 8) | data[pos + 1];
    if (len < 2) return;
    if (marker == 0xC4) {  // DHT: tables of (class/id byte, 16 code counts, symbols)
      // Like stb, read the 16 counts even past the segment's end (missing bytes read as 0).
      for (size_t p = pos + 2; p < pos + len && p < size;) {
        size_t symbols = 0;
        for (size_t i = 0; i < 16; ++i) symbols += p + 1 + i < size ? data[p + 1 + i] : 0;
        if (symbols > 256) {
          throw Error("corrupt JPEG Huffman table",
                      name + ": DHT at byte " + std::to_string(pos - 2), "at most 256 codes",
                      std::to_string(symbols) + " codes");
        }
        p += 17 + symbols;
      }
    }
    pos += len;
    if (marker == 0xDA) {  // SOS: entropy-coded data runs to the next marker other than RSTn
      auto at_marker = [&](size_t i) {
        const uint8_t next = data[i + 1];
        return data[i] == 0xFF && next != 0x00 && next != 0xFF && (next < 0xD0 || next > 0xD7);
      };
      while (pos + 1 < size && !at_marker(pos)) ++pos;
    }
  }
}

// PNG tEXt rules (PNG spec 11.3.4.3): keyword 1-79 printable Latin-1 bytes, no leading, trailing
// or consecutive spaces; text without NUL.
void check_text_entry(const std::pair<std::string, std::string>& entry, const std::string& where) {
  const std::string& key = entry.first;
  const std::string at = where + ": tEXt keyword \"" + key + "\"";
  if (key.empty() || key.size() > 79) {
    throw Error("bad PNG tEXt keyword length", at, "1 to 79 bytes",
                std::to_string(key.size()) + " bytes");
  }
  for (size_t i = 0; i < key.size(); ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (!((c >= 32 && c <= 126) || c >= 161)) {
      throw Error("bad PNG tEXt keyword character", at,
                  "printable Latin-1 (bytes 32-126, 161-255)",
                  "byte " + std::to_string(c) + " at position " + std::to_string(i));
    }
    if (c == ' ' && (i == 0 || i + 1 == key.size() || key[i - 1] == ' ')) {
      throw Error("bad PNG tEXt keyword spacing", at,
                  "no leading, trailing or consecutive spaces", "a space at position " +
                  std::to_string(i));
    }
  }
  const std::string& text = entry.second;
  const size_t nul = text.find('\0');
  if (nul != std::string::npos) {
    throw Error("PNG tEXt text contains a NUL byte", at, "no NUL bytes",
                "NUL at position " + std::to_string(nul));
  }
  if (text.size() > size_t(INT32_MAX) - key.size() - 1) {
    throw Error("PNG tEXt text too long", at, "a chunk of at most 2^31-1 bytes",
                std::to_string(text.size()) + " bytes of text");
  }
}

std::vector<uint8_t> encode_png_at(const Image& image, const PngText& text,
                                   const std::string& where) {
  detail::check_image(image, where);
  for (const auto& entry : text) check_text_entry(entry, where);

  int len = 0;
  std::unique_ptr<unsigned char, CFree> png(
      stbi_write_png_to_mem(image.rgb.data(), image.width * 3, image.width, image.height, 3, &len));
  // stb writes the signature, then IHDR (length 13) at byte 8: 8 + 4 + 4 + 13 + 4 = 33 bytes.
  constexpr size_t kAfterIhdr = 33;
  if (!png) {
    throw Error("PNG encoding failed", where, "an encoded PNG", "stb_image_write: out of memory");
  }
  if (size_t(len) < kAfterIhdr || read_be32(png.get() + 8) != 13 ||
      std::memcmp(png.get() + 12, "IHDR", 4) != 0) {
    throw Error("PNG encoder produced an unexpected layout", where, "IHDR at byte 8",
                std::to_string(len) + " bytes");
  }

  std::vector<uint8_t> out(png.get(), png.get() + kAfterIhdr);
  for (const auto& [key, value] : text) {
    const size_t data_len = key.size() + 1 + value.size();
    append_be32(out, uint32_t(data_len));
    const size_t type_at = out.size();
    out.insert(out.end(), {'t', 'E', 'X', 't'});
    out.insert(out.end(), key.begin(), key.end());
    out.push_back(0);
    out.insert(out.end(), value.begin(), value.end());
    append_be32(out, crc32(out.data() + type_at, 4 + data_len));
  }
  out.insert(out.end(), png.get() + kAfterIhdr, png.get() + len);
  return out;
}

}  // namespace

std::pair<int, int> image_size(const uint8_t* data, size_t size, const std::string& name) {
  if (size == 0) {
    throw Error("empty image file", name, std::string("a ") + kFormats + " image", "0 bytes");
  }
  if (data == nullptr) throw Error("null image data", name, "a buffer", "nullptr");
  if (size > size_t(INT_MAX)) {
    throw Error("encoded image too large", name, "at most 2147483647 bytes",
                std::to_string(size) + " bytes");
  }
  if (is_radiance_hdr(data, size)) {
    throw Error("unsupported image format", name, std::string("a ") + kFormats + " image",
                "Radiance HDR");
  }
  if (is_png(data, size)) {
    // Check the structure (stb checks no CRC) and the declared size before anything else.
    walk_png_chunks(data, size, name,
                    [&](const std::string& type, const uint8_t* body, uint32_t len, size_t) {
      if (type != "IHDR") return;
      if (len != 13) throw Error("bad PNG IHDR length", name, "13", std::to_string(len));
      detail::check_image_size(read_be32(body), read_be32(body + 4), name, "image");
      check_png_format(body[8], body[9], body[10], body[11], body[12], name);
    });
  }
  check_jpeg_huffman_tables(data, size, name);  // before stbi_info, which reads them too
  // Read the declared size first, so a small file declaring a huge image never allocates it.
  int width = 0, height = 0, channels = 0;
  if (!stbi_info_from_memory(data, int(size), &width, &height, &channels)) {
    throw Error("cannot read image header", name, std::string("a ") + kFormats + " image",
                stb_reason());
  }
  detail::check_image_size(width, height, name, "image");
  check_pnm(data, size, name);
  return {width, height};
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name) {
  const auto [width, height] = image_size(data, size, name);
  // req_comp = 3: grey is replicated and alpha dropped, like PIL's convert("RGB"). 16-bit samples
  // are reduced to their high byte by stb (stbi__convert_16_to_8).
  StbReader reader{data, size};
  const stbi_io_callbacks callbacks{&StbReader::read, &StbReader::skip, &StbReader::eof};
  int w = 0, h = 0, c = 0;
  std::unique_ptr<unsigned char, StbFree> pixels(
      stbi_load_from_callbacks(&callbacks, &reader, &w, &h, &c, 3));
  if (!pixels) {
    throw Error("cannot decode image", name, "valid image data",
                stb_reason() + (reader.ran_out ? " (the data ends early)" : ""));
  }
  if (reader.ran_out) {
    throw Error("truncated image", name, "complete image data",
                "the decoder needed bytes past the end of the " + std::to_string(size) +
                    "-byte data");
  }
  if (w != width || h != height) {
    throw Error("decoded image size differs from its header", name,
                detail::size_str(width, height), detail::size_str(w, h));
  }
  Image image;
  image.width = w;
  image.height = h;
  image.rgb.assign(pixels.get(), pixels.get() + size_t(w) * size_t(h) * 3);
  return image;
}

Image load_image(const std::string& path) {
  const std::vector<uint8_t> data = read_whole_file(path, "image file");
  return decode_image(data.data(), data.size(), path);
}

std::vector<uint8_t> encode_png(const Image& image, const PngText& text) {
  return encode_png_at(image, text, "encode_png");
}

void save_png(const std::string& path, const Image& image, const PngText& text) {
  const std::vector<uint8_t> png = encode_png_at(image, text, path);
  write_file_atomic(path, png.data(), png.size());
}

PngText read_png_text(const uint8_t* data, size_t size, const std::string& name) {
  PngText out;
  walk_png_chunks(data, size, name,
                  [&](const std::string& type, const uint8_t* body, uint32_t len, size_t pos) {
    if (type != "tEXt") return;
    const char* text = reinterpret_cast<const char*>(body);
    const void* nul = std::memchr(text, 0, len);
    const size_t key_len = nul ? size_t(static_cast<const char*>(nul) - text) : len;
    if (!nul || key_len == 0 || key_len > 79) {
      throw Error("malformed PNG tEXt chunk", name + ": chunk at byte " + std::to_string(pos),
                  "keyword of 1-79 bytes, NUL, text",
                  nul ? "keyword of " + std::to_string(key_len) + " bytes" : "no NUL separator");
    }
    out.emplace_back(std::string(text, key_len),
                     std::string(text + key_len + 1, len - key_len - 1));
  });
  return out;
}

PngText read_png_text(const std::string& path) {
  const std::vector<uint8_t> data = read_whole_file(path, "PNG file");
  return read_png_text(data.data(), data.size(), path);
}

}  // namespace omniflux
