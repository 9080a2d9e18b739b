// PIL-exact bicubic resize against the model fixtures: the images Qwen2VLImageProcessor (slow, PIL
// path) resized inside the reference runs.

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include <ATen/ATen.h>

#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"
#include "omniflux/io/safetensors.h"

namespace {

// Resizes `raw_name` (uint8 [H, W, 3]) to the shape of `expected_name` with PIL bicubic and
// expects every byte to match.
void check_fixture_resize(const std::string& file, const std::string& raw_name,
                          const std::string& expected_name) {
  SCOPED_TRACE(file + ": " + raw_name + " -> " + expected_name);
  const auto st = omniflux::SafetensorsFile::open(std::string(OMNIFLUX_FIXTURES) + "/" + file);
  const at::Tensor raw = st.get(raw_name);
  const at::Tensor expected = st.get(expected_name);
  ASSERT_EQ(raw.scalar_type(), at::kByte);
  ASSERT_EQ(expected.scalar_type(), at::kByte);
  ASSERT_EQ(expected.dim(), 3);
  ASSERT_EQ(expected.size(2), 3);

  const omniflux::Image src = omniflux::image_from_tensor(raw);
  const omniflux::Image out =
      omniflux::resize(src, int(expected.size(1)), int(expected.size(0)),
                       omniflux::Resample::Bicubic);
  const at::Tensor got = omniflux::image_to_tensor(out);
  ASSERT_EQ(got.sizes(), expected.sizes());
  const int64_t differing = got.ne(expected).sum().item<int64_t>();
  EXPECT_EQ(differing, 0) << "of " << got.numel() << " bytes";
}

}  // namespace

TEST(ImageFixture, Qwen25VlProcessorResizeIsExact) {
  // 150x100 -> 140x112 (smart_resize to multiples of 28).
  check_fixture_resize("qwen2_5_vl/io.safetensors", "raw_image_0", "resized_image_0");
}

TEST(ImageFixture, UniWorldReferenceImageResizeIsExact) {
  // 100x120 -> 112x112.
  check_fixture_resize("uniworld_pipeline/io.safetensors", "ref_image_0", "qwen_resized_image_0");
}
