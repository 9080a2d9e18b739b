// omniflux::image_size: the declared size of an encoded image, read without decoding pixels, with
// decode_image's header checks (so a server can refuse a large upload before allocating it).
#include <gtest/gtest.h>

#include <string>

#include "omniflux/error.h"
#include "omniflux/io/image.h"

using namespace omniflux;

TEST(ImageSize, ReadsTheHeaderOnly) {
  Image img{48, 20, std::vector<uint8_t>(48 * 20 * 3, 7)};
  std::vector<uint8_t> png = encode_png(img);
  EXPECT_EQ(image_size(png.data(), png.size(), "a.png"), std::make_pair(48, 20));
  // the pixels are not decoded: a PNG whose compressed pixel data is garbage (with valid chunk
  // CRCs) still reports its size, and only decode_image refuses it
  std::vector<uint8_t> bad = png;
  size_t at = 8;
  while (at + 8 <= bad.size() && std::string(bad.begin() + at + 4, bad.begin() + at + 8) != "IDAT")
    at += 12 + ((size_t(bad[at]) << 24) | (size_t(bad[at + 1]) << 16) | (size_t(bad[at + 2]) << 8) | bad[at + 3]);
  ASSERT_LT(at + 8, bad.size());
  const size_t len = (size_t(bad[at]) << 24) | (size_t(bad[at + 1]) << 16) | (size_t(bad[at + 2]) << 8) | bad[at + 3];
  for (size_t i = 0; i < len; ++i) bad[at + 8 + i] = 0xff;
  uint32_t crc = 0xffffffffu;  // CRC-32 of type + data (PNG spec, ISO 3309)
  for (size_t i = at + 4; i < at + 8 + len; ++i) {
    crc ^= bad[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  crc ^= 0xffffffffu;
  for (int k = 0; k < 4; ++k) bad[at + 8 + len + k] = static_cast<uint8_t>(crc >> (24 - 8 * k));
  EXPECT_EQ(image_size(bad.data(), bad.size(), "bad.png"), std::make_pair(48, 20));
  EXPECT_THROW(decode_image(bad.data(), bad.size(), "bad.png"), Error);
  // a PNG declaring 70000 x 1 fails the size check before anything is allocated
  std::vector<uint8_t> wide = png;
  wide[16] = 0, wide[17] = 1, wide[18] = 0x11, wide[19] = 0x70;  // IHDR width = 70000
  EXPECT_THROW(image_size(wide.data(), wide.size(), "wide.png"), Error);
  const std::string text = "not an image";
  EXPECT_THROW(image_size(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "t"), Error);
  EXPECT_THROW(image_size(png.data(), 0, "empty"), Error);
}
