#pragma once
// Image I/O: decoding (PNG, JPEG and WebP through libpng, libjpeg-turbo and libwebp), PNG encoding
// with tEXt chunks, and a resampler that reproduces PIL's Image.resize byte for byte.
// Every problem with user input is an omniflux::Error naming the file (or the buffer's name).
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace omniflux {

// 8-bit RGB, [height, width, 3] row-major (HWC), no padding between rows.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// Largest image accepted anywhere (decode, encode, resize, the resampler's intermediate): each
// side at most kMaxImageSide and at most kMaxImagePixels pixels (768 MiB of RGB). Decoding checks
// the declared size before allocating, so a tiny file declaring a huge image is rejected cheaply.
constexpr int kMaxImageSide = 65535;
constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

// Reads and decodes an image file: PNG, JPEG or WebP (lossless and lossy), found by its magic
// bytes; any other format (GIF, BMP, TGA, PSD, PNM, TIFF, ...) is an Error listing the accepted
// ones. The pixels equal Pillow's Image.open(path).convert("RGB"): grey is replicated, alpha is
// dropped (not composited), palettes are expanded, 16-bit samples keep their high byte except
// 16-bit grey, which is clipped to 255 (Pillow's mode I;16); JPEG uses libjpeg's accurate integer
// IDCT and fancy upsampling, and CMYK JPEG Pillow's CMYK to RGB formula. EXIF orientation is not
// applied (Pillow does not either, nor do the official processors). Stricter than Pillow: PNG
// chunk CRCs and IEND are required, a JPEG whose data ends early (EOI included) or whose
// entropy-coded data is corrupt is refused, and animated WebP is refused. The declared size is
// checked (kMaxImageSide, kMaxImagePixels) before any pixel memory is allocated.
Image load_image(const std::string& path);
// Same, from memory. `name` appears in errors.
Image decode_image(const uint8_t* data, size_t size, const std::string& name);
// The size an encoded image declares, (width, height), after the same header checks as
// decode_image and without decoding pixels: a server can refuse a large upload cheaply.
std::pair<int, int> image_size(const uint8_t* data, size_t size, const std::string& name);

// PNG tEXt entries: (keyword, text). Keywords are 1-79 printable Latin-1 bytes (32-126, 161-255)
// without leading, trailing or consecutive spaces; text is any bytes except NUL. Both are written
// as given: tEXt is defined as Latin-1, so UTF-8 text reads back as the same bytes but other PNG
// readers show non-ASCII characters as Latin-1.
using PngText = std::vector<std::pair<std::string, std::string>>;

// Encodes an 8-bit RGB PNG (stb_image_write), with one tEXt chunk per entry right after IHDR.
std::vector<uint8_t> encode_png(const Image& image, const PngText& text = {});
// Encodes a baseline JPEG at quality 1..100 (stb_image_write; no metadata).
std::vector<uint8_t> encode_jpeg(const Image& image, int quality = 90);
// encode_png, written with write_file_atomic: a failed write leaves no partial file.
void save_png(const std::string& path, const Image& image, const PngText& text = {});
// The tEXt chunks of a PNG, in file order. Checks the PNG structure and every chunk's CRC.
// zTXt and iTXt chunks are not read.
PngText read_png_text(const std::string& path);
PngText read_png_text(const uint8_t* data, size_t size, const std::string& name);

enum class Resample { Bilinear, Bicubic };

// PIL's Image.resize((width, height), resample) on an RGB image (box=None, reducing_gap=None),
// byte for byte: separable fixed-point convolution, horizontal pass first. Same size is a copy.
Image resize(const Image& image, int width, int height, Resample filter);

}  // namespace omniflux
