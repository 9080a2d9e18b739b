// JPEG encoding for outputs (the server's output_format "jpeg"), through stb_image_write's
// baseline encoder (4:2:0 below quality 90, 4:4:4 from 90 up). Outputs only: no metadata.
#include <cstring>

#include <stb_image_write.h>

#include "omniflux/error.h"
#include "omniflux/io/image.h"

namespace omniflux {

std::vector<uint8_t> encode_jpeg(const Image& image, int quality) {
  const char* where = "encode_jpeg";
  if (quality < 1 || quality > 100) throw Error("JPEG quality out of range", where, "1..100", std::to_string(quality));
  if (image.width < 1 || image.height < 1 || image.width > kMaxImageSide || image.height > kMaxImageSide ||
      image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3)
    throw Error("not an RGB image", where, "width x height x 3 bytes, sides 1.." + std::to_string(kMaxImageSide),
                std::to_string(image.width) + "x" + std::to_string(image.height) + ", " + std::to_string(image.rgb.size()) + " bytes");
  std::vector<uint8_t> out;
  auto append = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    const auto* p = static_cast<const uint8_t*>(data);
    v->insert(v->end(), p, p + size);
  };
  if (!stbi_write_jpg_to_func(append, &out, image.width, image.height, 3, image.rgb.data(), quality) || out.empty())
    throw Error("JPEG encoding failed", where, "an encoded JPEG", "stb_image_write failed");
  return out;
}

}  // namespace omniflux
