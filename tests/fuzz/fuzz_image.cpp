// libFuzzer target for image decoding (scripts/fuzz.sh builds and runs it): the bytes a client
// uploads, through image_size then decode_image, as the server's decode_upload calls them, and
// read_png_text. image_to_tensor (src/io/image_tensor.cpp) needs LibTorch and is a copy of the
// decoded buffer, so the target stops at the Image.
// Any input must give an Image whose size is the declared one, or throw omniflux::Error.
#include <cstdint>
#include <cstdlib>

#include "omniflux/error.h"
#include "omniflux/io/image.h"

// Larger declared images are refused before decoding here, as the server refuses them over
// --max-image-pixels; it keeps each run fast (the code paths are the same at any size).
constexpr int64_t kFuzzMaxPixels = int64_t(1) << 20;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto [w, h] = omniflux::image_size(data, size, "fuzz");
    if (w < 1 || h < 1 || int64_t(w) * h > kFuzzMaxPixels) {
      if (w < 1 || h < 1) std::abort();
      return 0;
    }
    const omniflux::Image im = omniflux::decode_image(data, size, "fuzz");
    if (im.width != w || im.height != h || im.rgb.size() != size_t(w) * size_t(h) * 3) std::abort();
  } catch (const omniflux::Error&) {
  }
  try {
    omniflux::read_png_text(data, size, "fuzz");
  } catch (const omniflux::Error&) {
  }
  return 0;
}
