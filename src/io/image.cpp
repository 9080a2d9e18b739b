// Image decoding (format sniffing and PNG structure checks; the pixel decoders are in
// image_decode.cpp), PNG encoding (stb_image_write) with tEXt chunks, PNG tEXt reading.
#include "omniflux/io/image.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "io/crc32.h"
#include "io/image_check.h"
#include "io/image_decode.h"
#include "omniflux/error.h"
#include "io/file_write.h"
#include "io/paths.h"

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

// What decode_image accepts, as every refusal lists it.
constexpr const char* kFormats = "PNG, JPEG, WebP";
constexpr uint8_t kPngSignature[8] = {137, 80, 78, 71, 13, 10, 26, 10};

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
    // Stop before reading an absurd file into memory (no accepted image comes near it).
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

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

bool is_png(const uint8_t* data, size_t size) {
  return size >= 8 && std::memcmp(data, kPngSignature, 8) == 0;
}

// Walks a PNG's chunks and checks its structure: signature, IHDR first, every length and CRC,
// and an IEND chunk (libpng would decode a file cut after its pixel data). Calls
// on_chunk(type, body, length, offset) for each chunk up to and including IEND; bytes after IEND
// are ignored.
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

// The IHDR fields the PNG spec allows, checked before libpng so that the message names the field.
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

enum class Format { Png, Jpeg, WebP };

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(data, magic, n) == 0;
}

// A TGA has no signature: its version 2 footer, or an 18-byte header with a colour-map flag of 0
// or 1, a known image type and pixel depth, and non-zero sides.
bool looks_like_tga(const uint8_t* data, size_t size) {
  static const char kFooter[] = "TRUEVISION-XFILE.";  // followed by a NUL
  if (size >= 26 && std::memcmp(data + size - 18, kFooter, 18) == 0) return true;
  if (size < 18 || data[1] > 1) return false;
  const uint8_t type = data[2], depth = data[16];
  const bool known_type = type == 1 || type == 2 || type == 3 || type == 9 || type == 10 ||
                          type == 11;
  const bool known_depth = depth == 8 || depth == 15 || depth == 16 || depth == 24 || depth == 32;
  return known_type && known_depth && (data[12] | data[13]) != 0 && (data[14] | data[15]) != 0;
}

// The format, from the magic bytes. Every other format is an Error that names it when it is
// recognised (the ones Pillow opens and a client might send) and lists the accepted ones.
Format sniff(const uint8_t* data, size_t size, const std::string& name) {
  if (is_png(data, size)) return Format::Png;
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return Format::Jpeg;
  if (starts_with(data, size, "RIFF", 4) && size >= 12 && std::memcmp(data + 8, "WEBP", 4) == 0) {
    return Format::WebP;
  }
  const char* other = nullptr;
  if (starts_with(data, size, "GIF87a", 6) || starts_with(data, size, "GIF89a", 6)) {
    other = "GIF";
  } else if (starts_with(data, size, "BM", 2)) {
    other = "BMP";
  } else if (starts_with(data, size, "8BPS", 4)) {
    other = "PSD";
  } else if (size >= 3 && data[0] == 'P' && data[1] >= '1' && data[1] <= '7' &&
             (data[2] == ' ' || (data[2] >= '\t' && data[2] <= '\r'))) {
    other = "PNM";
  } else if (starts_with(data, size, "II*\0", 4) || starts_with(data, size, "MM\0*", 4)) {
    other = "TIFF";
  } else if (starts_with(data, size, "#?RADIANCE", 10) || starts_with(data, size, "#?RGBE", 6)) {
    other = "Radiance HDR";
  } else if (size >= 12 && std::memcmp(data + 4, "ftyp", 4) == 0) {
    other = "HEIF/AVIF";
  } else if (looks_like_tga(data, size)) {
    other = "TGA";
  }
  if (other) throw Error("unsupported image format", name, kFormats, other);
  std::string head;
  for (size_t i = 0; i < std::min<size_t>(size, 8); ++i) {
    char b[4];
    std::snprintf(b, sizeof(b), "%s%02x", i ? " " : "", data[i]);
    head += b;
  }
  throw Error("unknown image format", name, kFormats, "data starting with bytes " + head);
}

// Checks the buffer, then the format; for PNG also the chunk structure, every CRC and the IHDR
// fields, returning the IHDR size in `png_size`.
Format check_encoded(const uint8_t* data, size_t size, const std::string& name,
                     std::pair<int, int>& png_size) {
  if (size == 0) throw Error("empty image file", name, kFormats, "0 bytes");
  if (data == nullptr) throw Error("null image data", name, "a buffer", "nullptr");
  if (size > size_t(INT_MAX)) {
    throw Error("encoded image too large", name, "at most 2147483647 bytes",
                std::to_string(size) + " bytes");
  }
  const Format format = sniff(data, size, name);
  if (format == Format::Png) {
    walk_png_chunks(data, size, name,
                    [&](const std::string& type, const uint8_t* body, uint32_t len, size_t) {
      if (type != "IHDR") return;
      if (len != 13) throw Error("bad PNG IHDR length", name, "13", std::to_string(len));
      detail::check_image_size(read_be32(body), read_be32(body + 4), name, "image");
      check_png_format(body[8], body[9], body[10], body[11], body[12], name);
      png_size = {int(read_be32(body)), int(read_be32(body + 4))};
    });
  }
  return format;
}

}  // namespace

std::pair<int, int> image_size(const uint8_t* data, size_t size, const std::string& name) {
  std::pair<int, int> png_size;
  switch (check_encoded(data, size, name, png_size)) {
    case Format::Png: return png_size;
    case Format::Jpeg: return detail::jpeg_size(data, size, name);
    case Format::WebP: return detail::webp_size(data, size, name);
  }
  return {0, 0};
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name) {
  std::pair<int, int> png_size;
  switch (check_encoded(data, size, name, png_size)) {
    case Format::Png: {
      Image image = detail::decode_png(data, size, name);
      if (std::make_pair(image.width, image.height) != png_size) {
        throw Error("decoded image size differs from its header", name,
                    detail::size_str(png_size.first, png_size.second),
                    detail::size_str(image.width, image.height));
      }
      return image;
    }
    case Format::Jpeg: return detail::decode_jpeg(data, size, name);
    case Format::WebP: return detail::decode_webp(data, size, name);
  }
  return {};
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
