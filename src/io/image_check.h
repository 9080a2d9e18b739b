#pragma once
// Checks shared by the image sources (private).
#include <cstdint>
#include <string>

#include "omniflux/io/image.h"

namespace omniflux {
namespace detail {

// "WxH"
std::string size_str(int64_t width, int64_t height);
// Throws Error unless 1 <= width, height <= kMaxImageSide and width*height <= kMaxImagePixels.
// `what` says which size it is ("image", "output size", ...).
void check_image_size(int64_t width, int64_t height, const std::string& where, const char* what);
// Throws Error unless `image` has a valid size and exactly width*height*3 bytes.
void check_image(const Image& image, const std::string& where);

}  // namespace detail
}  // namespace omniflux
