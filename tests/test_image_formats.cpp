// The decoders (libpng, libjpeg-turbo, libwebp) against Pillow 13, byte for byte, and what they
// refuse: other formats, truncated and corrupt data, huge declared sizes. Fixtures:
// tests/fixtures/images/formats, written by tests/tools/make_image_formats.py.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "omniflux/io/image.h"

using omniflux::Error;
using omniflux::Image;

namespace {

const std::string kDir = std::string(OMNIFLUX_FIXTURES) + "/images/formats/";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing " << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

nlohmann::json cases() {
  std::ifstream f(kDir + "cases.json");
  EXPECT_TRUE(f.good()) << "missing " << kDir << "cases.json";
  return nlohmann::json::parse(f).at("cases");
}

// decode_image must throw omniflux::Error (and nothing else), whose message contains `part`.
::testing::AssertionResult refused(const std::vector<uint8_t>& b, const std::string& part) {
  try {
    omniflux::decode_image(b.data(), b.size(), "upload");
  } catch (const Error& e) {
    if (std::string(e.what()).find(part) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks \"" << part << "\": " << e.what();
    }
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "decoded without an error";
}

// Big-endian 16-bit field.
void put_be16(std::vector<uint8_t>& b, size_t at, unsigned v) {
  b[at] = uint8_t(v >> 8);
  b[at + 1] = uint8_t(v);
}

// The offset of the first FF xx marker (xx = `marker`) in a JPEG.
size_t jpeg_marker(const std::vector<uint8_t>& b, uint8_t marker) {
  for (size_t i = 2; i + 1 < b.size(); ++i) {
    if (b[i] == 0xFF && b[i + 1] == marker) return i;
  }
  ADD_FAILURE() << "no marker " << int(marker);
  return 0;
}

}  // namespace

TEST(ImageFormats, PixelsEqualPillow) {
  const nlohmann::json all = cases();
  ASSERT_GE(all.size(), 30u);
  int png = 0, jpeg = 0, webp = 0;
  for (const auto& c : all) {
    const std::string file = c.at("file");
    SCOPED_TRACE(file + " (" + c.at("note").get<std::string>() + ")");
    const std::vector<uint8_t> bytes = read_bytes(kDir + file);
    const std::vector<uint8_t> want = read_bytes(kDir + file + ".rgb");
    const int w = c.at("width"), h = c.at("height");
    ASSERT_EQ(want.size(), size_t(w) * h * 3);
    EXPECT_EQ(omniflux::image_size(bytes.data(), bytes.size(), file), std::make_pair(w, h));
    const Image got = omniflux::decode_image(bytes.data(), bytes.size(), file);
    ASSERT_EQ(got.width, w);
    ASSERT_EQ(got.height, h);
    size_t differ = 0, first = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (got.rgb[i] != want[i] && differ++ == 0) first = i;
    }
    EXPECT_EQ(differ, 0u) << "first at byte " << first << ": got " << int(got.rgb[first])
                          << ", Pillow " << int(want[first]);
    png += file.find(".png") != std::string::npos;
    jpeg += file.find(".jpg") != std::string::npos;
    webp += file.find(".webp") != std::string::npos;
  }
  EXPECT_GE(png, 10);
  EXPECT_GE(jpeg, 10);
  EXPECT_GE(webp, 5);
}

TEST(ImageFormats, ExifOrientationIsNotApplied) {
  // The official processors open images with Image.open(...).convert("RGB") and never call
  // ImageOps.exif_transpose: a JPEG tagged "rotate 90" keeps its stored size and pixel order.
  const std::vector<uint8_t> b = read_bytes(kDir + "exif_rotate90.jpg");
  const std::string s(b.begin(), b.end());
  ASSERT_NE(s.find(std::string("Exif\0\0", 6)), std::string::npos);
  // Orientation tag 0x0112, type SHORT, count 1, value 6, in either byte order.
  const bool tagged = s.find(std::string("\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00", 10)) !=
                          std::string::npos ||
                      s.find(std::string("\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06", 10)) !=
                          std::string::npos;
  ASSERT_TRUE(tagged) << "the fixture lost its Orientation tag";
  const Image im = omniflux::decode_image(b.data(), b.size(), "exif_rotate90.jpg");
  EXPECT_EQ(im.width, 48);
  EXPECT_EQ(im.height, 32);
  // Its pixels are Pillow's stored-order ones (PixelsEqualPillow compares every byte).
  EXPECT_EQ(im.rgb, read_bytes(kDir + "exif_rotate90.jpg.rgb"));
}

TEST(ImageFormats, OtherFormatsAreRefusedByName) {
  struct Case {
    const char* format;
    std::string bytes;
  };
  const std::vector<Case> others = {
      {"GIF", "GIF89a\x01\x00\x01\x00\x00\x00\x00;"},
      {"GIF", "GIF87a"},
      {"BMP", std::string("BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00", 14)},
      {"PSD", std::string("8BPS\x00\x01", 6)},
      {"PNM", "P6\n1 1\n255\n\x01\x02\x03"},
      {"PNM", "P5 1 1 255 x"},
      {"PNM", "P1\n1 1\n0"},
      {"TGA", std::string("\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x18\x00"
                          "\x01\x02\x03", 21)},
      {"TIFF", std::string("II*\x00\x08\x00\x00\x00", 8)},
      {"Radiance HDR", "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 1\n"},
      {"HEIF/AVIF", std::string("\x00\x00\x00\x1c" "ftypavif\x00\x00\x00\x00", 16)},
  };
  for (const auto& c : others) {
    SCOPED_TRACE(c.format);
    const std::vector<uint8_t> b = bytes_of(c.bytes);
    for (bool header_only : {false, true}) {
      try {
        if (header_only) {
          omniflux::image_size(b.data(), b.size(), "upload");
        } else {
          omniflux::decode_image(b.data(), b.size(), "upload");
        }
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        EXPECT_EQ(e.what_part(), "unsupported image format");
        EXPECT_EQ(e.where(), "upload");
        EXPECT_EQ(e.got(), c.format);
        EXPECT_EQ(std::string(e.what()),
                  "unsupported image format (upload): expected PNG, JPEG, WebP, got " +
                      std::string(c.format));
      }
    }
  }
  // Unknown bytes and empty data list the accepted formats too.
  EXPECT_TRUE(refused(bytes_of("this is not an image"), "unknown image format"));
  EXPECT_TRUE(refused(bytes_of("this is not an image"), "expected PNG, JPEG, WebP"));
  EXPECT_TRUE(refused(bytes_of("this is not an image"), "74 68 69 73"));
  EXPECT_THROW(omniflux::decode_image(nullptr, 0, "empty"), Error);
  try {
    const uint8_t one = 0;
    omniflux::decode_image(&one, 0, "empty");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.expected(), "PNG, JPEG, WebP");
  }
  // Animated WebP: Pillow would give the first frame; refused like GIF. (VP8X with the animation
  // flag, an ANIM chunk and no frames.)
  std::string anim = "RIFF";
  anim += std::string("\x1e\x00\x00\x00", 4) + "WEBPVP8X" + std::string("\x0a\x00\x00\x00", 4);
  anim += std::string("\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00", 10);  // flags: animation; 1x1
  anim += "ANIM" + std::string("\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00", 10);
  EXPECT_TRUE(refused(bytes_of(anim), "animated WebP"));
}

TEST(ImageFormats, TruncatedFilesAreRefused) {
  // Every prefix of each file is an Error: PNG needs IEND, JPEG its EOI, WebP its RIFF size.
  for (const char* name : {"rgb8.png", "rgb8_adam7.png", "baseline_420.jpg", "progressive_420.jpg",
                           "grey.jpg", "cmyk.jpg", "lossless.webp", "lossy.webp",
                           "lossy_alpha.webp"}) {
    const std::vector<uint8_t> b = read_bytes(kDir + name);
    for (size_t n = 0; n < b.size(); ++n) {
      std::vector<uint8_t> cut(b.begin(), b.begin() + n);  // its own buffer, for ASan
      EXPECT_THROW(omniflux::decode_image(cut.data(), cut.size(), name), Error) << name << " " << n;
    }
  }
  const std::vector<uint8_t> jpg = read_bytes(kDir + "baseline_444.jpg");
  EXPECT_TRUE(refused({jpg.begin(), jpg.end() - 200}, "truncated JPEG"));
  const std::vector<uint8_t> webp = read_bytes(kDir + "lossy.webp");
  EXPECT_TRUE(refused({webp.begin(), webp.end() - 50}, "truncated WebP"));
}

TEST(ImageFormats, CorruptFilesAreRefused) {
  // JPEG: the scan cut short by an EOI, the entropy decoder hits a marker early.
  std::vector<uint8_t> jpg = read_bytes(kDir + "baseline_420.jpg");
  const size_t sos = jpeg_marker(jpg, 0xDA);
  std::vector<uint8_t> early(jpg.begin(), jpg.begin() + (sos + jpg.size()) / 2);
  early.insert(early.end(), {0xFF, 0xD9});
  EXPECT_TRUE(refused(early, "corrupt JPEG data"));
  // JPEG: frame headers whose component count, or length, disagrees with the segment.
  std::vector<uint8_t> two = read_bytes(kDir + "grey.jpg");
  const size_t sof = jpeg_marker(two, 0xC0);
  two[sof + 9] = 2;
  EXPECT_THROW(omniflux::decode_image(two.data(), two.size(), "two.jpg"), Error);
  std::vector<uint8_t> sof_len = jpg;
  put_be16(sof_len, jpeg_marker(sof_len, 0xC0) + 2, 5);
  EXPECT_TRUE(refused(sof_len, "JPEG"));
  // WebP: a broken VP8 start code, a broken VP8L signature.
  std::vector<uint8_t> lossy = read_bytes(kDir + "lossy.webp");
  const std::string ls(lossy.begin(), lossy.end());
  const size_t start_code = ls.find("\x9d\x01\x2a");
  ASSERT_NE(start_code, std::string::npos);
  lossy[start_code] = 0x00;
  EXPECT_TRUE(refused(lossy, "WebP"));
  std::vector<uint8_t> lossless = read_bytes(kDir + "lossless.webp");
  ASSERT_EQ(std::string(lossless.begin() + 12, lossless.begin() + 16), "VP8L");
  lossless[20] = 0x00;  // the 0x2f signature byte after the chunk header
  EXPECT_TRUE(refused(lossless, "WebP"));

  // Every single-byte change to small files of each kind: an Error or a decode, nothing else
  // (the fuzz targets do this at scale, under sanitizers).
  for (const char* name : {"rgb8.png", "palette4_trns.png", "progressive_422_odd.jpg",
                           "lossy_odd.webp", "lossless_alpha.webp"}) {
    const std::vector<uint8_t> b = read_bytes(kDir + name);
    for (size_t i = 0; i < b.size(); ++i) {
      std::vector<uint8_t> m = b;
      m[i] ^= 0xA5;
      try {
        omniflux::decode_image(m.data(), m.size(), name);
      } catch (const Error&) {
      }
    }
  }
}

TEST(ImageFormats, JpegWithTooManyScansIsRefused) {
  // 505 legal progressive scans of an 8x8 image (tests/tools/make_many_scans_jpeg.c): each scan is
  // a pass over the whole coefficient buffer, so thousands of them would be a CPU bomb.
  const std::vector<uint8_t> b = read_bytes(kDir + "many_scans.jpg");
  EXPECT_TRUE(refused(b, "JPEG has too many scans"));
  EXPECT_TRUE(refused(b, "at most 500 scans"));
  EXPECT_EQ(omniflux::image_size(b.data(), b.size(), "many_scans.jpg"), std::make_pair(8, 8));
}

TEST(ImageFormats, HugeDeclaredSizesAreRefusedBeforeAllocation) {
  // A 1 KB JPEG declaring 30000 x 30000 (900 M pixels, over kMaxImagePixels): refused from the
  // frame header, before jpeg_start_decompress or the pixel buffer.
  std::vector<uint8_t> jpg = read_bytes(kDir + "baseline_420.jpg");
  const size_t sof = jpeg_marker(jpg, 0xC0);
  put_be16(jpg, sof + 5, 30000);  // height
  put_be16(jpg, sof + 7, 30000);  // width
  for (bool header_only : {true, false}) {
    try {
      if (header_only) {
        omniflux::image_size(jpg.data(), jpg.size(), "bomb.jpg");
      } else {
        omniflux::decode_image(jpg.data(), jpg.size(), "bomb.jpg");
      }
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos) << e.what();
      EXPECT_EQ(e.got(), "30000x30000");
    }
  }
  // WebP cannot declare more than 16384 x 16384 (= kMaxImagePixels); image_size reads it from the
  // header without decoding, which is what the server checks against --max-image-pixels.
  std::vector<uint8_t> webp = read_bytes(kDir + "lossless.webp");
  // VP8L header after the 0x2f signature: 14 bits width - 1, 14 bits height - 1, little-endian.
  const uint32_t bits = (16384u - 1) | ((16384u - 1) << 14);
  const uint8_t flags = webp[24] & 0xF0;  // alpha hint and version, kept
  for (int k = 0; k < 4; ++k) webp[21 + k] = uint8_t(bits >> (8 * k));
  webp[24] = uint8_t((webp[24] & 0x0F) | flags);
  EXPECT_EQ(omniflux::image_size(webp.data(), webp.size(), "big.webp"),
            std::make_pair(16384, 16384));
}
