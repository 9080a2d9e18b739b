#include "omniflux/io/image_tensor.h"

#include <cstring>

#include <ATen/ATen.h>

#include "io/image_check.h"
#include "omniflux/error.h"

namespace omniflux {

at::Tensor image_to_tensor(const Image& image) {
  detail::check_image(image, "image_to_tensor");
  at::Tensor t = at::empty({image.height, image.width, 3}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(t.data_ptr<uint8_t>(), image.rgb.data(), image.rgb.size());
  return t;
}

Image image_from_tensor(const at::Tensor& tensor) {
  const std::string where = "image_from_tensor";
  if (!tensor.defined()) throw Error("undefined tensor", where, "a [H, W, 3] tensor", "undefined");
  if (tensor.dim() != 3 || tensor.size(2) != 3) {
    throw Error("wrong image tensor shape", where, "[H, W, 3]", shape_str(tensor.sizes().vec()));
  }
  detail::check_image_size(tensor.size(1), tensor.size(0), where, "image");

  at::Tensor t = tensor.to(at::kCPU);
  if (t.scalar_type() != at::kByte) {
    if (!at::isFloatingType(t.scalar_type())) {
      throw Error("wrong image tensor dtype", where, "uint8 or floating point",
                  std::string(c10::toString(t.scalar_type())));
    }
    t = t.to(at::kDouble);
    if (at::isnan(t).any().item<bool>()) {
      throw Error("image tensor holds NaN", where, "values in [0, 255]", "NaN");
    }
    const double lo = t.min().item<double>(), hi = t.max().item<double>();
    if (lo < 0.0 || hi > 255.0) {
      throw Error("image tensor values out of range", where, "values in [0, 255]",
                  "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    t = at::round(t).to(at::kByte);
  }
  t = t.contiguous();
  Image image;
  image.height = static_cast<int>(t.size(0));
  image.width = static_cast<int>(t.size(1));
  const uint8_t* p = t.data_ptr<uint8_t>();
  image.rgb.assign(p, p + t.numel());
  return image;
}

}  // namespace omniflux
