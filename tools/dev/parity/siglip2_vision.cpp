// Parity case siglip2_vision: Siglip2ImageProcessor on the raw images (raw_image_0, 1, ... as one
// batch), and the NaFlex SigLIP2 vision model (with its pooling head) on the reference processor
// outputs, so each stage is checked alone.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/io/image_tensor.h"
#include "omniflux/models/siglip2.h"
#include "nn/debug.h"
#include "parity.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(siglip2_vision) {
  ParityOutputs out;
  auto proc = omniflux::SiglipImageProcessorConfig::load(ctx.file("preprocessor_config"));
  std::vector<omniflux::Image> images;  // one NaFlex batch of every declared image
  for (const at::Tensor& raw : ctx.numbered_inputs("raw_image_")) images.push_back(omniflux::image_from_tensor(raw));
  auto inputs = omniflux::siglip2_preprocess(images, proc);
  out["pixel_values"] = inputs.pixel_values;
  out["pixel_attention_mask"] = inputs.pixel_attention_mask;
  out["spatial_shapes"] = inputs.spatial_shapes;

  omniflux::DebugScope taps([&](const std::string& name, const at::Tensor& t) { out[name] = t.detach().clone(); });
  const std::string folder = std::filesystem::path(ctx.file("weights")).parent_path().string();
  auto model = omniflux::Siglip2VisionModel::load(folder, ctx.rt, /*with_head=*/true);
  auto r = model.forward(ctx.input("pixel_values"), ctx.input("pixel_attention_mask"), ctx.input("spatial_shapes"));
  out["last_hidden_state"] = r.last_hidden_state.to(at::kFloat);
  out["pooler_output"] = r.pooler_output.to(at::kFloat);
  return out;
}
