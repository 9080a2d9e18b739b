#pragma once
// Conversions between omniflux::Image and LibTorch tensors (kept out of image.h so that image I/O
// does not pull in ATen).
#include <ATen/core/Tensor.h>

#include "omniflux/io/image.h"

namespace omniflux {

// uint8 CPU tensor [height, width, 3] (HWC), a copy of image.rgb.
at::Tensor image_to_tensor(const Image& image);

// From a [height, width, 3] tensor on any device: uint8, or floating point with values in
// [0, 255], rounded half to even (like numpy's round). NaN or values outside [0, 255] are errors.
Image image_from_tensor(const at::Tensor& tensor);

}  // namespace omniflux
