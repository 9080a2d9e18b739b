// PIL's Image.resize for 8-bit RGB, reproduced byte for byte (Pillow's libImaging/Resample.c,
// reimplemented from its description; checked against Debian's Pillow 9.4 by
// tests/tools/gen_resize_golden.py and tests/test_image.cpp).
//
// Each axis gets a table of fixed-point weights (precompute_coeffs + normalize_coeffs_8bpc in PIL
// Resample.c). The image is filtered horizontally first into an 8-bit intermediate, then
// vertically; an axis that keeps its size is skipped. The weights are computed in double with
// PIL's exact operation order, so this file must not be built with -ffast-math or FMA contraction
// (GCC keeps -ffp-contract=off in ISO mode, which CMAKE_CXX_EXTENSIONS OFF selects).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "io/image_check.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"

namespace omniflux {
namespace {

// PIL Resample.c: PRECISION_BITS = 32 - 8 - 2.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

// Keys' cubic with a = -0.5, as PIL Resample.c writes it.
double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Weights of one axis: output sample i reads count[i] inputs from first[i] on, with the weights
// coeffs[i * ksize, i * ksize + count[i]).
struct AxisWeights {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> coeffs;  // [out_size, ksize], kPrecisionBits fractional bits
};

// PIL Resample.c precompute_coeffs() with the default box (in0 = 0, in1 = in_size), then
// normalize_coeffs_8bpc().
AxisWeights axis_weights(int in_size, int out_size, Resample filter) {
  double (*fn)(double) = filter == Resample::Bicubic ? bicubic_filter : bilinear_filter;
  const double filter_support = filter == Resample::Bicubic ? 2.0 : 1.0;

  // PIL passes the box as floats, so in1 - in0 is a float difference (exact below 2^24).
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  // Downscaling widens the filter by the scale; upscaling keeps its natural width.
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter_support * filterscale;
  const double ss = 1.0 / filterscale;

  AxisWeights w;
  // Upper bound on taps per output: count < 2 * support + 1 <= ksize (see below).
  w.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  w.first.resize(out_size);
  w.count.resize(out_size);
  w.coeffs.assign(size_t(out_size) * size_t(w.ksize), 0);
  std::vector<double> k(w.ksize);

  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    // PIL Resample.c rounds with (int)(v + 0.5), i.e. truncation toward zero; then clamps.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    // xmax <= center + support + 0.5 and xmin > center - support - 0.5, so n <= ksize.
    const int n = xmax - xmin;

    double sum = 0.0;
    for (int x = 0; x < n; ++x) {
      k[x] = fn((x + xmin - center + 0.5) * ss);
      sum += k[x];
    }
    int32_t* out = &w.coeffs[size_t(xx) * size_t(w.ksize)];
    for (int x = 0; x < n; ++x) {
      const double v = sum != 0.0 ? k[x] / sum : k[x];
      // PIL Resample.c normalize_coeffs_8bpc: round half away from zero, then truncate.
      out[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                     : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    w.first[xx] = xmin;
    w.count[xx] = n;
  }
  return w;
}

// PIL Resample.c clip8: the accumulator holds value << kPrecisionBits (plus the rounding half).
inline uint8_t clip8(int32_t acc) {
  if (acc >= (1 << kPrecisionBits << 8)) return 255;
  if (acc <= 0) return 0;
  return static_cast<uint8_t>(acc >> kPrecisionBits);
}

// The accumulators are int32 as in PIL. Normalised bicubic weights have a positive part of at most
// ~1.14 (searched over all sizes up to 200 -> 400), so |acc| < 2^21 + 255 * 1.14 * 2^22 < 1.3e9.
constexpr int32_t kRoundingHalf = 1 << (kPrecisionBits - 1);

// Filters rows [row0, row0 + rows) of `src` (src_w wide) horizontally into `dst` (out_w wide).
void horizontal_pass(const uint8_t* src, int src_w, int row0, int rows, const AxisWeights& w,
                     int out_w, uint8_t* dst) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in_row = src + (size_t(row0) + size_t(y)) * size_t(src_w) * 3;
    uint8_t* out_row = dst + size_t(y) * size_t(out_w) * 3;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &w.coeffs[size_t(xx) * size_t(w.ksize)];
      const uint8_t* p = in_row + size_t(w.first[xx]) * 3;
      int32_t r = kRoundingHalf, g = kRoundingHalf, b = kRoundingHalf;
      for (int x = 0; x < w.count[xx]; ++x) {
        r += p[3 * x + 0] * k[x];
        g += p[3 * x + 1] * k[x];
        b += p[3 * x + 2] * k[x];
      }
      out_row[3 * xx + 0] = clip8(r);
      out_row[3 * xx + 1] = clip8(g);
      out_row[3 * xx + 2] = clip8(b);
    }
  }
}

// Filters `src` (width w) vertically into out_h rows of `dst`. Row indices in `wt` are relative to
// row `row_shift` of src (the horizontal pass only produced the rows the vertical pass reads).
void vertical_pass(const uint8_t* src, int width, int row_shift, const AxisWeights& wt, int out_h,
                   uint8_t* dst) {
  const size_t row_bytes = size_t(width) * 3;
  std::vector<int32_t> acc(row_bytes);
  for (int yy = 0; yy < out_h; ++yy) {
    const int32_t* k = &wt.coeffs[size_t(yy) * size_t(wt.ksize)];
    const uint8_t* rows = src + size_t(wt.first[yy] - row_shift) * row_bytes;
    std::fill(acc.begin(), acc.end(), kRoundingHalf);
    // Integer sums are exact, so summing row by row equals PIL's per-pixel loop.
    for (int y = 0; y < wt.count[yy]; ++y) {
      const uint8_t* row = rows + size_t(y) * row_bytes;
      const int32_t ky = k[y];
      for (size_t i = 0; i < row_bytes; ++i) acc[i] += row[i] * ky;
    }
    uint8_t* out = dst + size_t(yy) * row_bytes;
    for (size_t i = 0; i < row_bytes; ++i) out[i] = clip8(acc[i]);
  }
}

}  // namespace

Image resize(const Image& image, int width, int height, Resample filter) {
  const std::string where = "resize";
  detail::check_image(image, where + " input");
  detail::check_image_size(width, height, where, "output size");
  if (filter != Resample::Bilinear && filter != Resample::Bicubic) {
    throw Error("unknown resampling filter", where, "Bilinear or Bicubic",
                std::to_string(static_cast<int>(filter)));
  }
  if (width == image.width && height == image.height) return image;  // PIL returns a copy

  const bool need_horizontal = width != image.width;
  const bool need_vertical = height != image.height;
  const AxisWeights horiz = axis_weights(image.width, width, filter);
  const AxisWeights vert = axis_weights(image.height, height, filter);

  // Source rows the vertical pass reads (PIL Resample.c ybox_first / ybox_last).
  const int row_first = vert.first[0];
  const int row_last = vert.first[height - 1] + vert.count[height - 1];

  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(size_t(width) * size_t(height) * 3);

  if (!need_vertical) {
    horizontal_pass(image.rgb.data(), image.width, 0, image.height, horiz, width, out.rgb.data());
    return out;
  }
  if (!need_horizontal) {
    vertical_pass(image.rgb.data(), image.width, 0, vert, height, out.rgb.data());
    return out;
  }
  const int rows = row_last - row_first;
  detail::check_image_size(width, rows, where, "intermediate image (new width x rows used)");
  std::vector<uint8_t> tmp(size_t(width) * size_t(rows) * 3);
  horizontal_pass(image.rgb.data(), image.width, row_first, rows, horiz, width, tmp.data());
  vertical_pass(tmp.data(), width, row_first, vert, height, out.rgb.data());
  return out;
}

}  // namespace omniflux
