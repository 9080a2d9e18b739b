// Image I/O and the PIL-exact resampler. Golden data: tests/fixtures/resize (tests/tools/
// gen_resize_golden.py) and tests/fixtures/images (tests/tools/gen_image_fixtures.py), both made
// with Debian 12's Pillow 9.4.0. The decoders against Pillow 13 and the refused formats:
// test_image_formats.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"

namespace fs = std::filesystem;
using omniflux::Error;
using omniflux::Image;
using omniflux::Resample;

namespace {

const std::string kResizeDir = std::string(OMNIFLUX_FIXTURES) + "/resize/";
const std::string kImagesDir = std::string(OMNIFLUX_FIXTURES) + "/images/";

Image random_image(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  for (auto& v : im.rgb) v = uint8_t(rng() & 0xFF);
  return im;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
}

// A fresh folder per test process, removed when the process exits.
std::string temp_dir() {
  struct TempDir {
    fs::path path;
    TempDir() {
      path = fs::temp_directory_path() / ("omniflux_image_test_" + std::to_string(::getpid()));
      fs::create_directories(path);
    }
    ~TempDir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const TempDir dir;
  return dir.path.string();
}

// Compares two images; on mismatch reports the first differing byte and how many differ.
::testing::AssertionResult same_pixels(const Image& got, const Image& want) {
  if (got.width != want.width || got.height != want.height) {
    return ::testing::AssertionFailure() << "size " << got.width << "x" << got.height
                                         << " != " << want.width << "x" << want.height;
  }
  if (got.rgb.size() != want.rgb.size()) {
    return ::testing::AssertionFailure() << "buffer sizes differ";
  }
  size_t diff = 0, first = 0;
  for (size_t i = 0; i < got.rgb.size(); ++i) {
    if (got.rgb[i] != want.rgb[i] && diff++ == 0) first = i;
  }
  if (diff == 0) return ::testing::AssertionSuccess();
  const size_t px = first / 3;
  return ::testing::AssertionFailure()
         << diff << " bytes differ; first at x=" << px % got.width << " y=" << px / got.width
         << " c=" << first % 3 << ": got " << int(got.rgb[first]) << ", want "
         << int(want.rgb[first]);
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

void put_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

// Bitwise CRC-32 (independent of the library's table version), to keep mutated PNGs well-formed.
uint32_t crc32_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// Recomputes the CRC of every chunk of a PNG (after a deliberate mutation).
void refresh_crcs(std::vector<uint8_t>& png) {
  for (size_t pos = 8; pos + 12 <= png.size();) {
    const uint32_t len = be32(&png[pos]);
    if (pos + 12 + len > png.size()) break;
    put_be32(&png[pos + 8 + len], crc32_bitwise(&png[pos + 4], 4 + size_t(len)));
    pos += 12 + len;
  }
}

// A valid PNG whose IHDR declares width x height with the given colour type (0 grey, 2 RGB),
// and whose IHDR CRC is correct: only the declared size is absurd.
std::vector<uint8_t> png_declaring(uint32_t width, uint32_t height, uint8_t colour_type) {
  std::vector<uint8_t> png = omniflux::encode_png(random_image(1, 1, 1));
  put_be32(&png[16], width);
  put_be32(&png[20], height);
  png[25] = colour_type;
  refresh_crcs(png);
  return png;
}

}  // namespace

// ---------------------------------------------------------------- resize

TEST(ImageResize, MatchesPillowGoldenCasesExactly) {
  std::ifstream f(kResizeDir + "cases.json");
  ASSERT_TRUE(f.good()) << "missing " << kResizeDir << "cases.json";
  const auto meta = nlohmann::json::parse(f);
  const auto& cases = meta.at("cases");
  ASSERT_GE(cases.size(), 30u);
  for (const auto& c : cases) {
    const std::string out_name = c.at("out");
    SCOPED_TRACE(out_name);
    const Image src = omniflux::load_image(kResizeDir + c.at("src").get<std::string>());
    const Image want = omniflux::load_image(kResizeDir + out_name);
    const std::string filter = c.at("filter");
    ASSERT_TRUE(filter == "bicubic" || filter == "bilinear");
    const Resample r = filter == "bicubic" ? Resample::Bicubic : Resample::Bilinear;
    const Image got = omniflux::resize(src, c.at("w"), c.at("h"), r);
    EXPECT_TRUE(same_pixels(got, want));
  }
}

TEST(ImageResize, SameSizeIsACopy) {
  const Image im = random_image(7, 5, 3);
  EXPECT_TRUE(same_pixels(omniflux::resize(im, 7, 5, Resample::Bicubic), im));
}

TEST(ImageResize, ConstantImageStaysConstant) {
  // Normalised weights sum to 1 << 22 up to rounding, so a flat colour survives any resize.
  Image im;
  im.width = 9;
  im.height = 4;
  for (int i = 0; i < 9 * 4; ++i) im.rgb.insert(im.rgb.end(), {17, 128, 250});
  for (Resample r : {Resample::Bilinear, Resample::Bicubic}) {
    for (auto [w, h] : std::vector<std::pair<int, int>>{{1, 1}, {31, 3}, {4, 17}, {9, 40}}) {
      const Image out = omniflux::resize(im, w, h, r);
      for (size_t i = 0; i < out.rgb.size(); i += 3) {
        ASSERT_EQ(out.rgb[i], 17);
        ASSERT_EQ(out.rgb[i + 1], 128);
        ASSERT_EQ(out.rgb[i + 2], 250);
      }
    }
  }
}

TEST(ImageResize, RejectsBadArguments) {
  const Image im = random_image(4, 3, 5);
  EXPECT_THROW(omniflux::resize(im, 0, 3, Resample::Bicubic), Error);
  EXPECT_THROW(omniflux::resize(im, 4, -1, Resample::Bicubic), Error);
  EXPECT_THROW(omniflux::resize(im, 70000, 1, Resample::Bicubic), Error);
  EXPECT_THROW(omniflux::resize(im, 65535, 65535, Resample::Bilinear), Error);
  EXPECT_THROW(omniflux::resize(Image{}, 4, 4, Resample::Bicubic), Error);
  Image bad = im;
  bad.rgb.pop_back();
  EXPECT_THROW(omniflux::resize(bad, 8, 6, Resample::Bicubic), Error);
  // The horizontal pass would hold 65535 rows x 8192 columns: over kMaxImagePixels.
  Image tall;
  tall.width = 1;
  tall.height = 65535;
  tall.rgb.assign(65535 * 3, 7);
  try {
    omniflux::resize(tall, 8192, 2, Resample::Bicubic);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("intermediate"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- decoding

TEST(ImageLoad, DecodesToPillowRgb) {
  // Exact for JPEG too: libjpeg-turbo with Pillow's settings (test_image_formats.cpp has more).
  for (const char* name : {"rgb.png", "grey.png", "grey_alpha.png", "rgba.png", "bilevel.png",
                           "palette.png", "grey16.png", "rgb16.png", "rgba16.png", "smooth.jpg"}) {
    SCOPED_TRACE(name);
    const Image want = omniflux::load_image(kImagesDir + name + ".expected.png");
    EXPECT_TRUE(same_pixels(omniflux::load_image(kImagesDir + name), want));
    // decode_image on the same bytes gives the same result.
    const std::vector<uint8_t> bytes = read_bytes(kImagesDir + name);
    EXPECT_TRUE(same_pixels(omniflux::decode_image(bytes.data(), bytes.size(), name), want));
  }
  EXPECT_EQ(omniflux::load_image(kImagesDir + "smooth.jpg").width, 52);
  EXPECT_EQ(omniflux::load_image(kImagesDir + "rgb.png").height, 9);
}

TEST(ImageLoad, RefusesTheFormatsStbUsedToRead) {
  // Real files of each format (Pillow's writers), no longer decoded: the error names the format.
  for (auto [name, format] : std::vector<std::pair<const char*, const char*>>{
           {"rgb.bmp", "BMP"}, {"rgb.tga", "TGA"}, {"rgb.ppm", "PNM"}, {"grey.pgm", "PNM"},
           {"rgb.psd", "PSD"}, {"two_frames.gif", "GIF"}}) {
    try {
      omniflux::load_image(kImagesDir + name);
      ADD_FAILURE() << name << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.got(), format) << e.what();
      EXPECT_NE(std::string(e.what()).find("PNG, JPEG, WebP"), std::string::npos) << e.what();
    }
  }
}

TEST(ImageLoad, MissingEmptyAndUnreadableFilesThrow) {
  EXPECT_THROW(omniflux::load_image(temp_dir() + "/does_not_exist.png"), Error);
  const std::string empty = temp_dir() + "/empty.png";
  write_bytes(empty, {});
  try {
    omniflux::load_image(empty);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), empty);
  }
  EXPECT_THROW(omniflux::load_image(temp_dir()), Error);  // a directory
  EXPECT_THROW(omniflux::decode_image(nullptr, 0, "null"), Error);
  const uint8_t junk[] = "this is not an image at all";
  EXPECT_THROW(omniflux::decode_image(junk, sizeof(junk), "junk"), Error);
  const char hdr[] = "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 1\n\x80\x80\x80\x80";
  EXPECT_THROW(omniflux::decode_image(reinterpret_cast<const uint8_t*>(hdr), sizeof(hdr), "hdr"),
               Error);
}

TEST(ImageLoad, TruncatedFilesThrow) {
  // Every prefix is an error: PNG needs its IEND, JPEG its EOI.
  const std::vector<uint8_t> png = omniflux::encode_png(random_image(11, 7, 9));
  for (size_t n = 0; n < png.size(); ++n) {
    EXPECT_THROW(omniflux::decode_image(png.data(), n, "truncated.png"), Error) << n << " bytes";
  }
  for (const char* name : {"rgb.png", "grey16.png", "palette.png", "smooth.jpg"}) {
    const std::vector<uint8_t> bytes = read_bytes(kImagesDir + name);
    for (size_t n = 0; n < bytes.size(); ++n) {
      EXPECT_THROW(omniflux::decode_image(bytes.data(), n, name), Error) << name << " " << n;
    }
  }
}

TEST(ImageLoad, CorruptPngsThrow) {
  const std::vector<uint8_t> good = omniflux::encode_png(random_image(11, 7, 9));
  ASSERT_NO_THROW(omniflux::decode_image(good.data(), good.size(), "good.png"));
  auto mutated = [&](auto&& mutate) {
    std::vector<uint8_t> b = good;
    mutate(b);
    return b;
  };
  // Mutations after which every chunk CRC is recomputed, so libpng's own checks are reached.
  const std::vector<std::vector<uint8_t>> bad = {
      mutated([](auto& b) { b[0] = 0; }),                                   // signature
      mutated([](auto& b) { put_be32(&b[16], 0); refresh_crcs(b); }),       // width 0
      mutated([](auto& b) { put_be32(&b[20], 0); refresh_crcs(b); }),       // height 0
      mutated([](auto& b) { b[24] = 3; refresh_crcs(b); }),                 // bit depth 3
      mutated([](auto& b) { b[25] = 5; refresh_crcs(b); }),                 // colour type 5
      mutated([](auto& b) { b[41] = 0xFF; b[42] = 0xFF; refresh_crcs(b); }),  // zlib header
      mutated([](auto& b) { b[45] ^= 0x10; }),  // a bit of the IDAT data: CRC mismatch
      mutated([](auto& b) { b.resize(b.size() - 12); }),  // no IEND
      mutated([](auto& b) { b.resize(b.size() - 2); }),   // IEND's CRC cut short
  };
  ASSERT_EQ(std::string(good.begin() + 37, good.begin() + 41), "IDAT");
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_THROW(omniflux::decode_image(bad[i].data(), bad[i].size(), "bad.png"), Error) << i;
  }
  // Written to disk, the error names the file and carries libpng's reason.
  const std::string path = temp_dir() + "/corrupt.png";
  write_bytes(path, bad[5]);  // zlib's error, through libpng
  try {
    omniflux::load_image(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.where().rfind(path, 0), 0u) << e.where();
    EXPECT_FALSE(e.got().empty());
  }
}

TEST(ImageLoad, OversizedJpegHuffmanTableThrows) {
  // A DHT declaring more than 256 codes (stb_image 2.27 wrote past its tables; libjpeg refuses it).
  std::vector<uint8_t> jpeg = read_bytes(kImagesDir + "smooth.jpg");
  size_t dht = 2;
  while (dht + 1 < jpeg.size() && !(jpeg[dht] == 0xFF && jpeg[dht + 1] == 0xC4)) ++dht;
  ASSERT_LT(dht + 21, jpeg.size());
  for (size_t i = 0; i < 16; ++i) jpeg[dht + 5 + i] = 0xFF;  // 16 x 255 codes
  try {
    omniflux::decode_image(jpeg.data(), jpeg.size(), "dht.jpg");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Huffman"), std::string::npos) << e.what();
  }
}

TEST(ImageLoad, HugeDeclaredSizesAreRejectedBeforeDecoding) {
  // Tiny files declaring huge images (decompression bombs) must fail without allocating.
  using Case = std::tuple<uint32_t, uint32_t, int>;
  for (auto [w, h, colour] :
       std::vector<Case>{{100000, 100000, 2}, {20000, 20000, 0}, {70000, 1, 2}, {1, 70000, 0}}) {
    const std::vector<uint8_t> png = png_declaring(w, h, uint8_t(colour));
    ASSERT_NO_THROW(omniflux::read_png_text(png.data(), png.size(), "bomb.png"));  // CRCs valid
    try {
      omniflux::decode_image(png.data(), png.size(), "bomb.png");
      ADD_FAILURE() << "no error for " << w << "x" << h;
    } catch (const Error& e) {
      EXPECT_EQ(e.where(), "bomb.png");
      EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos) << e.what();
    }
  }
}

// ---------------------------------------------------------------- PNG encoding and text

TEST(ImagePng, RoundTripIsExact) {
  for (auto [w, h] : std::vector<std::pair<int, int>>{{1, 1}, {13, 9}, {1, 40}, {256, 3}}) {
    const Image im = random_image(w, h, uint32_t(w * 1000 + h));
    const std::vector<uint8_t> png = omniflux::encode_png(im);
    EXPECT_TRUE(same_pixels(omniflux::decode_image(png.data(), png.size(), "mem.png"), im));
    const std::string path = temp_dir() + "/round_trip.png";
    omniflux::save_png(path, im);
    EXPECT_TRUE(same_pixels(omniflux::load_image(path), im));
    EXPECT_TRUE(omniflux::read_png_text(path).empty());
  }
}

TEST(ImagePng, TextChunksAreWrittenAfterIhdrAndReadBack) {
  const Image im = random_image(5, 4, 11);
  const omniflux::PngText text = {
      {"parameters", "prompt: a cat\nseed: 42, steps: 28"},
      {"Empty", ""},
      {"latin1 \xE9t\xE9", std::string("caf\xE9 \xFF")},
      {std::string(79, 'k'), std::string(100000, 'x')},
      {"parameters", "a second entry with the same keyword"},
  };
  const std::vector<uint8_t> png = omniflux::encode_png(im, text);
  EXPECT_EQ(std::string(png.begin() + 37, png.begin() + 41), "tEXt");  // right after IHDR
  EXPECT_EQ(omniflux::read_png_text(png.data(), png.size(), "mem.png"), text);
  EXPECT_TRUE(same_pixels(omniflux::decode_image(png.data(), png.size(), "mem.png"), im));

  const std::string path = temp_dir() + "/text.png";
  omniflux::save_png(path, im, text);
  EXPECT_EQ(read_bytes(path), png);
  EXPECT_EQ(omniflux::read_png_text(path), text);
  EXPECT_TRUE(same_pixels(omniflux::load_image(path), im));
}

TEST(ImagePng, RejectsBadKeywordsAndText) {
  const Image im = random_image(2, 2, 1);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "empty keyword"},
      {std::string(80, 'k'), "keyword too long"},
      {std::string("a\0b", 3), "NUL in keyword"},
      {"line\nbreak", "control character"},
      {"del\x7F", "DEL"},
      {"nbsp\xA0", "byte 160"},
      {" lead", "leading space"},
      {"trail ", "trailing space"},
      {"two  spaces", "consecutive spaces"},
      {"ok", std::string("NUL\0in text", 11)},
  };
  for (const auto& entry : bad) {
    EXPECT_THROW(omniflux::encode_png(im, {entry}), Error) << entry.second;
  }
  EXPECT_NO_THROW(omniflux::encode_png(im, {{"one space ok", ""}}));
}

TEST(ImagePng, RejectsBadImagesAndPaths) {
  EXPECT_THROW(omniflux::encode_png(Image{}), Error);
  Image mismatch = random_image(3, 3, 2);
  mismatch.rgb.resize(26);
  EXPECT_THROW(omniflux::encode_png(mismatch), Error);
  Image zero_w;
  zero_w.height = 3;
  EXPECT_THROW(omniflux::encode_png(zero_w), Error);

  const Image im = random_image(3, 3, 2);
  const std::string missing_dir = temp_dir() + "/no/such/dir/out.png";
  try {
    omniflux::save_png(missing_dir, im);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), missing_dir);
  }
  EXPECT_THROW(omniflux::save_png(temp_dir(), im), Error);  // a directory
  if (fs::exists("/dev/full")) EXPECT_THROW(omniflux::save_png("/dev/full", im), Error);
}

TEST(ImagePng, ReadTextRejectsMalformedFiles) {
  const std::vector<uint8_t> png = omniflux::encode_png(random_image(3, 2, 4), {{"k", "v"}});
  EXPECT_THROW(omniflux::read_png_text(png.data(), 7, "short.png"), Error);
  for (size_t n = 8; n < png.size(); n += 3) {
    EXPECT_THROW(omniflux::read_png_text(png.data(), n, "truncated.png"), Error) << n;
  }
  std::vector<uint8_t> crc = png;
  crc[43] ^= 1;  // inside the tEXt data
  EXPECT_THROW(omniflux::read_png_text(crc.data(), crc.size(), "crc.png"), Error);
  std::vector<uint8_t> jpeg = read_bytes(kImagesDir + "smooth.jpg");
  EXPECT_THROW(omniflux::read_png_text(jpeg.data(), jpeg.size(), "smooth.jpg"), Error);
  EXPECT_THROW(omniflux::read_png_text(temp_dir() + "/missing.png"), Error);
  // A tEXt chunk without its NUL separator (CRC fixed up so only the content is wrong).
  std::vector<uint8_t> nosep = omniflux::encode_png(random_image(1, 1, 4), {{"key", "value"}});
  ASSERT_EQ(be32(&nosep[33]), 9u);
  nosep[44] = 'X';
  put_be32(&nosep[33 + 8 + 9], crc32_bitwise(&nosep[37], 4 + 9));
  EXPECT_THROW(omniflux::read_png_text(nosep.data(), nosep.size(), "nosep.png"), Error);
}

// ---------------------------------------------------------------- tensors

TEST(ImageTensor, RoundTripAndLayout) {
  const Image im = random_image(5, 3, 8);
  const at::Tensor t = omniflux::image_to_tensor(im);
  EXPECT_EQ(t.sizes(), (at::IntArrayRef{3, 5, 3}));
  EXPECT_EQ(t.scalar_type(), at::kByte);
  EXPECT_EQ(t[1][4][2].item<int>(), im.rgb[(1 * 5 + 4) * 3 + 2]);  // HWC
  EXPECT_TRUE(same_pixels(omniflux::image_from_tensor(t), im));
  // Non-contiguous input (a transposed view) is read through its strides.
  const at::Tensor tt = t.transpose(0, 1).contiguous().transpose(0, 1);
  EXPECT_TRUE(same_pixels(omniflux::image_from_tensor(tt), im));
}

TEST(ImageTensor, FloatIsRoundedHalfToEvenAndChecked) {
  at::Tensor f = at::tensor({0.0f, 0.5f, 1.5f, 2.49f, 254.5f, 255.0f}).reshape({1, 2, 3});
  const Image im = omniflux::image_from_tensor(f);
  EXPECT_EQ(im.rgb, (std::vector<uint8_t>{0, 0, 2, 2, 254, 255}));
  EXPECT_THROW(omniflux::image_from_tensor(f + 1), Error);                  // 256
  EXPECT_THROW(omniflux::image_from_tensor(f - 1), Error);                  // -1
  at::Tensor nan = f.clone();
  nan[0][0][0] = std::nanf("");
  EXPECT_THROW(omniflux::image_from_tensor(nan), Error);
  EXPECT_THROW(omniflux::image_from_tensor(at::zeros({3, 4, 4}, at::kByte)), Error);  // CHW
  EXPECT_THROW(omniflux::image_from_tensor(at::zeros({4, 3}, at::kByte)), Error);
  EXPECT_THROW(omniflux::image_from_tensor(at::zeros({0, 4, 3}, at::kByte)), Error);
  EXPECT_THROW(omniflux::image_from_tensor(at::zeros({2, 2, 3}, at::kInt)), Error);
  EXPECT_THROW(omniflux::image_from_tensor(at::Tensor()), Error);
  EXPECT_THROW(omniflux::image_to_tensor(Image{}), Error);
}
