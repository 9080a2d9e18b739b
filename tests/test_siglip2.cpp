// SigLIP vision towers: the classic SiglipVisionModel against the uniworld_pipeline fixture's
// SigLIP stage (siglip_pixel_values -> siglip_features), and bad inputs for both towers.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/siglip2.h"
#include "test_util.h"

using namespace omniflux;

TEST(SiglipVisionModel, MatchesTheUniWorldFixtureSiglipStage) {
  auto io = SafetensorsFile::open(fixture("uniworld_pipeline/io.safetensors"));
  auto model = SiglipVisionModel::load(fixture("uniworld_pipeline/siglip2"));
  EXPECT_FALSE(model.has_head());
  EXPECT_EQ(model.config().image_size, 64);
  auto out = model.forward(io.get("siglip_pixel_values"));
  EXPECT_FALSE(out.pooler_output.defined());
  at::Tensor ref = io.get("siglip_features");
  ASSERT_EQ(out.last_hidden_state.sizes(), ref.sizes());
  // MANIFEST uniworld_pipeline.outputs.siglip_features.tolerance_max_abs
  EXPECT_LT((out.last_hidden_state - ref).abs().max().item<double>(), 2e-5);
}

TEST(SiglipVisionModel, HeadLoadsOnRequestAndPools) {
  auto model = SiglipVisionModel::load(fixture("uniworld_pipeline/siglip2"), {}, /*with_head=*/true);
  EXPECT_TRUE(model.has_head());
  auto out = model.forward(at::zeros({2, 3, 64, 64}));
  ASSERT_EQ(out.pooler_output.sizes(), at::IntArrayRef({2, 16}));
}

TEST(SiglipVisionModel, BadInputsAreErrors) {
  auto model = SiglipVisionModel::load(fixture("uniworld_pipeline/siglip2"));
  EXPECT_THROW(model.forward(at::zeros({1, 3, 48, 64})), Error);  // not the fixed size
  EXPECT_THROW(model.forward(at::zeros({1, 1, 64, 64})), Error);  // grey: one channel
  EXPECT_THROW(model.forward(at::zeros({3, 64, 64})), Error);
}

TEST(Siglip2VisionModel, WrongPatchEmbeddingShapeIsAnError) {
  // A classic (Conv2d) checkpoint is not a NaFlex one: the Linear weight shape check names the key.
  try {
    Siglip2VisionModel::load(fixture("uniworld_pipeline/siglip2"));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vision_model.embeddings.patch_embedding.weight"), std::string::npos)
        << e.what();
  }
  // And the other way round.
  EXPECT_THROW(SiglipVisionModel::load(fixture("siglip2_vision")), Error);
}

TEST(Siglip2VisionModel, RejectsInconsistentProcessorTensors) {
  auto model = Siglip2VisionModel::load(fixture("siglip2_vision"));
  EXPECT_FALSE(model.has_head());
  auto io = SafetensorsFile::open(fixture("siglip2_vision/io.safetensors"));
  at::Tensor pv = io.get("pixel_values"), mask = io.get("pixel_attention_mask"), shapes = io.get("spatial_shapes");
  auto out = model.forward(pv, mask, shapes);
  EXPECT_LT((out.last_hidden_state - io.get("last_hidden_state")).abs().max().item<double>(), 4e-5);
  EXPECT_THROW(model.forward(pv, mask, at::tensor(std::vector<int64_t>{6, 9}).view({1, 2})), Error);    // 54 != 48 real rows
  EXPECT_THROW(model.forward(pv, mask, at::tensor(std::vector<float>{6, 8}).view({1, 2})), Error);           // float shapes
  EXPECT_THROW(model.forward(pv, mask.slice(1, 0, 40), shapes), Error);             // mask length
  EXPECT_THROW(model.forward(pv.slice(2, 0, 700), mask, shapes), Error);            // patch row width
}

TEST(Siglip2Processor, NaflexTargetSize) {
  using P = std::pair<int64_t, int64_t>;
  // The fixture image: 90 x 130 with at most 50 patches -> 6 x 8 patches (MANIFEST sanity).
  EXPECT_EQ(naflex_target_size(90, 130, 16, 50), P(96, 128));
  // A square image with a square budget fills it exactly; a tiny one is scaled up.
  EXPECT_EQ(naflex_target_size(512, 512, 16, 256), P(256, 256));
  EXPECT_EQ(naflex_target_size(10, 10, 16, 256), P(256, 256));
  // Extreme aspect: each side keeps at least one patch.
  auto [h, w] = naflex_target_size(16, 4000, 16, 64);
  EXPECT_EQ(h, 16);
  EXPECT_LE((h / 16) * (w / 16), 64);
  EXPECT_THROW(naflex_target_size(0, 10, 16, 64), Error);
  EXPECT_THROW(naflex_target_size(10, 10, 16, 0), Error);
}

TEST(SiglipProcessor, MatchesTheUniWorldFixtureSiglipPixels) {
  // SiglipImageProcessor on ref_image_0 (100 x 120): PIL bilinear to 64 x 64, rescale, normalise.
  auto io = SafetensorsFile::open(fixture("uniworld_pipeline/io.safetensors"));
  auto cfg = SiglipImageProcessorConfig::load(fixture("uniworld_pipeline/siglip2"));
  EXPECT_EQ(cfg.resample, 2);
  EXPECT_EQ(cfg.height, 64);
  at::Tensor px = siglip_preprocess({image_from_tensor(io.get("ref_image_0"))}, cfg);
  at::Tensor ref = io.get("siglip_pixel_values");
  ASSERT_EQ(px.sizes(), ref.sizes());
  EXPECT_LT((px - ref).abs().max().item<double>(), 1e-5);
  // Image to features end to end.
  auto model = SiglipVisionModel::load(fixture("uniworld_pipeline/siglip2"));
  EXPECT_LT((model.forward(px).last_hidden_state - io.get("siglip_features")).abs().max().item<double>(), 2e-5);
}

TEST(Siglip2Processor, MatchesTheFixtureAndRejectsNonRgb) {
  auto io = SafetensorsFile::open(fixture("siglip2_vision/io.safetensors"));
  auto cfg = SiglipImageProcessorConfig::load(fixture("siglip2_vision/preprocessor_config.json"));
  EXPECT_EQ(cfg.max_num_patches, 50);
  auto in = siglip2_preprocess({image_from_tensor(io.get("raw_image_0"))}, cfg);
  EXPECT_TRUE(at::equal(in.spatial_shapes, io.get("spatial_shapes")));
  EXPECT_TRUE(at::equal(in.pixel_attention_mask, io.get("pixel_attention_mask")));
  EXPECT_LT((in.pixel_values - io.get("pixel_values")).abs().max().item<double>(), 1e-5);

  Image grey;
  grey.width = 20;
  grey.height = 10;
  grey.rgb.assign(200, 128);  // one byte per pixel
  try {
    siglip2_preprocess({grey}, cfg);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("grey"), std::string::npos) << e.what();
  }
  EXPECT_THROW(siglip_preprocess({grey}, SiglipImageProcessorConfig{}), Error);
  Image empty;
  EXPECT_THROW(siglip2_preprocess({empty}, cfg), Error);
}
