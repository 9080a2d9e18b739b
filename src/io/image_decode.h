#pragma once
// The pixel decoders behind omniflux::decode_image (private): libpng, libjpeg-turbo and libwebp,
// each converting to 8-bit RGB as Pillow's Image.open(...).convert("RGB") does. Each reads its
// header first and checks the declared size (detail::check_image_size) before allocating pixels.
// PNG's chunk structure and CRCs are checked by the caller (image.cpp) before decode_png.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "omniflux/io/image.h"

namespace omniflux {
namespace detail {

Image decode_png(const uint8_t* data, size_t size, const std::string& name);

// (width, height) from the frame header, after the same checks as decode_jpeg's header phase.
std::pair<int, int> jpeg_size(const uint8_t* data, size_t size, const std::string& name);
Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name);

// (width, height) of the canvas; animated WebP is refused.
std::pair<int, int> webp_size(const uint8_t* data, size_t size, const std::string& name);
Image decode_webp(const uint8_t* data, size_t size, const std::string& name);

}  // namespace detail
}  // namespace omniflux
