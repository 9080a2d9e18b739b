// FLUX components beyond their parity cases: the reference-token API, VAE tiling, EOS pooling,
// T5 buckets at the float32 boundaries, and errors on bad inputs and checkpoints.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/clip_text.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/flux_vae.h"
#include "omniflux/models/t5_encoder.h"
#include "test_util.h"

using namespace omniflux;
namespace fs = std::filesystem;

namespace {

FluxDiTInputs transformer_inputs(const SafetensorsFile& io) {
  FluxDiTInputs in;
  in.hidden_states = io.get("hidden_states");
  in.encoder_hidden_states = io.get("encoder_hidden_states");
  in.pooled_projections = io.get("pooled_projections");
  in.timestep = io.get("timestep");
  in.guidance = io.get("guidance");
  in.img_ids = io.get("img_ids");
  in.txt_ids = io.get("txt_ids");
  return in;
}

// A copy of a fixture model folder without one tensor.
void copy_without(const std::string& case_dir, const std::string& weights, const std::string& drop,
                  const fs::path& out) {
  fs::copy_file(fixture(case_dir + "/config.json"), out / "config.json");
  auto f = SafetensorsFile::open(fixture(case_dir + "/" + weights));
  std::map<std::string, at::Tensor> kept;
  for (const auto& t : f.tensors())
    if (t.name != drop) kept[t.name] = f.get(t.name);
  save_safetensors((out / weights).string(), kept);
}

}  // namespace

TEST(FluxTransformer, ReferenceTokensAreSlicedOffTheOutput) {
  auto io = SafetensorsFile::open(fixture("flux_transformer/io.safetensors"));
  auto model = FluxTransformer::load(fixture("flux_transformer"));
  FluxDiTInputs in = transformer_inputs(io);
  in.ref_hidden_states = io.get("ref_hidden_states");
  in.ref_img_ids = io.get("ref_img_ids");
  at::Tensor got = model.forward(in);
  at::Tensor ref = io.get("output_with_ref").slice(1, 0, 12);
  ASSERT_EQ(got.sizes(), ref.sizes());
  EXPECT_LE((got - ref).abs().max().item<double>(), 4e-5);
  // and the reference tokens do change the prediction (fixture sanity: 0.59)
  EXPECT_GT((got - io.get("output")).abs().max().item<double>(), 0.1);
}

TEST(FluxTransformer, BadInputsAreErrors) {
  auto io = SafetensorsFile::open(fixture("flux_transformer/io.safetensors"));
  auto model = FluxTransformer::load(fixture("flux_transformer"));
  FluxDiTInputs in = transformer_inputs(io);
  auto bad = in;
  bad.guidance = at::Tensor();
  EXPECT_THROW(model.forward(bad), Error);  // guidance_embeds model without guidance
  bad = in;
  bad.img_ids = in.img_ids.slice(0, 0, 11);
  EXPECT_THROW(model.forward(bad), Error);
  bad = in;
  bad.hidden_states = at::zeros({1, 12, 63});
  EXPECT_THROW(model.forward(bad), Error);
  bad = in;
  bad.encoder_hidden_states = at::zeros({2, 7, 64});
  EXPECT_THROW(model.forward(bad), Error);
  bad = in;
  bad.ref_hidden_states = io.get("ref_hidden_states");  // without ids
  EXPECT_THROW(model.forward(bad), Error);
}

TEST(FluxTransformer, MissingOrExtraWeightsAreErrors) {
  TempDir dir;
  copy_without("flux_transformer", "diffusion_pytorch_model.safetensors", "single_transformer_blocks.1.proj_out.bias",
               dir.path());
  EXPECT_THROW(FluxTransformer::load(dir.path().string()), Error);
  TempDir dir2;
  copy_without("flux_transformer", "diffusion_pytorch_model.safetensors", "", dir2.path());
  auto f = SafetensorsFile::open((dir2.path() / "diffusion_pytorch_model.safetensors").string());
  std::map<std::string, at::Tensor> all;
  for (const auto& t : f.tensors()) all[t.name] = f.get(t.name);
  all["transformer_blocks.2.norm1.linear.weight"] = at::zeros({4});  // a block the config does not have
  save_safetensors((dir2.path() / "extra.safetensors").string(), all);
  fs::remove(dir2.path() / "diffusion_pytorch_model.safetensors");
  fs::rename(dir2.path() / "extra.safetensors", dir2.path() / "diffusion_pytorch_model.safetensors");
  EXPECT_THROW(FluxTransformer::load(dir2.path().string()), Error);
}

TEST(FluxTransformer, FlopsOfFluxDevAt1024) {
  // FLUX.1-dev, 4096 image + 512 text tokens: 57 blocks of 2L(4D^2 + 2DF) + 4L^2 D (~74.4 TFLOP).
  FluxDiTConfig c;
  const double l = 4608, d = 3072, f = 12288;
  const double expect = 57 * (2 * l * (4 * d * d + 2 * d * f) + 4 * l * l * d);
  EXPECT_NEAR(flux_dit_flops(c, 4096, 512) / expect, 1.0, 1e-3);
}

TEST(FluxVae, TilingBlendsSeamsAndReassemblesALocalDecoder) {
  // A decoder that acts pixel by pixel: tiled and untiled must agree everywhere.
  auto local = [](const at::Tensor& z) {
    return (z * 2 + 1).repeat_interleave(8, 2).repeat_interleave(8, 3);
  };
  at::Tensor z = at::randn({1, 3, 21, 30});
  at::Tensor full = local(z);
  at::Tensor tiled = tiled_decode(z, 8, 0.25, 8, local);
  ASSERT_EQ(tiled.sizes(), full.sizes());
  EXPECT_LE((tiled - full).abs().max().item<double>(), 1e-5);

  // A decoder that is a constant per tile: the seam is a linear ramp from one tile to the next.
  int calls = 0;
  auto constant = [&](const at::Tensor& t) {
    return at::full({1, 1, t.size(2) * 8, t.size(3) * 8}, static_cast<float>(10 * calls++));
  };
  at::Tensor ramp = tiled_decode(at::zeros({1, 1, 8, 14}), 8, 0.25, 8, constant);
  ASSERT_EQ(calls, 2);  // tiles at 0 and 6
  ASSERT_EQ(ramp.size(3), 112);
  // tile 0 kept up to 48 px; tile 1 starts at 48 px and fades in over 16 px
  EXPECT_EQ(ramp[0][0][0][47].item<float>(), 0.0f);
  for (int x = 0; x < 16; ++x) EXPECT_NEAR(ramp[0][0][3][48 + x].item<float>(), 10.0f * x / 16.0f, 1e-5);
  EXPECT_EQ(ramp[0][0][5][64].item<float>(), 10.0f);
  EXPECT_THROW(tiled_decode(z, 1, 0.25, 8, local), Error);
  EXPECT_THROW(tiled_decode(z, 8, 1.0, 8, local), Error);
}

TEST(FluxVae, TiledDecodeOfTheTinyModelMatchesUntiled) {
  auto vae = FluxVae::load(fixture("flux_vae"));  // sample_size 64: 8-latent tiles
  at::manual_seed(3);
  at::Tensor small = at::randn({1, 16, 8, 6});
  EXPECT_TRUE(at::equal(vae.decode_tiled(small), vae.decode(small)));  // one tile: no tiling
  // 24 x 20 latents in 2 x 2 tiles of 16 (overlap 4 latents = 32 px).
  at::Tensor z = at::randn({1, 16, 24, 20});
  at::Tensor full = vae.decode(z), tiled = vae.decode_tiled(z, {16, 0.25});
  ASSERT_EQ(tiled.sizes(), (at::IntArrayRef{1, 3, 192, 160}));
  // Each tile sees its own GroupNorm statistics and attention context, so tiled decoding is not
  // exact (as in diffusers); it must still be the same picture in the same place.
  at::Tensor a = tiled.flatten() - tiled.mean(), b = full.flatten() - full.mean();
  const double corr = ((a * b).sum() / (a.norm() * b.norm())).item<double>();
  EXPECT_GT(corr, 0.95);
  EXPECT_LT((tiled - full).abs().mean().item<double>(), 0.3 * full.abs().mean().item<double>());
  // A tile put in the wrong place would not correlate: the image shifted by one tile step does not.
  at::Tensor shifted = full.roll({96}, {2}).flatten() - full.mean();
  EXPECT_LT(((a * shifted).sum() / (a.norm() * shifted.norm())).item<double>(), 0.5);
  // Across the seams, neighbouring columns differ no more than elsewhere (blended, no step).
  at::Tensor col_steps = (tiled.slice(3, 1) - tiled.slice(3, 0, -1)).abs().mean({0, 1, 2});
  const double typical = col_steps.mean().item<double>();
  for (int64_t x = 96; x < 128; ++x) EXPECT_LT(col_steps[x].item<double>(), 3 * typical) << "column " << x;
}

TEST(FluxVae, BadShapesAreErrors) {
  auto vae = FluxVae::load(fixture("flux_vae"));
  EXPECT_THROW(vae.decode(at::zeros({1, 4, 8, 8})), Error);
  EXPECT_THROW(vae.decode(at::zeros({16, 8, 8})), Error);
  EXPECT_THROW(vae.encode(at::zeros({1, 3, 60, 48})), Error);  // not a multiple of 8
  EXPECT_THROW(vae.encode(at::zeros({1, 1, 64, 48})), Error);
}

TEST(ClipText, PooledIndexFollowsTheEosRule) {
  at::Tensor ids = at::tensor({49406, 320, 49407, 5, 49407, 49407}, at::kLong).reshape({1, 6});
  EXPECT_EQ(clip_pooled_index(ids, 2)[0].item<int64_t>(), 2);      // legacy: first maximal id
  EXPECT_EQ(clip_pooled_index(ids, 49407)[0].item<int64_t>(), 2);  // first eos
  at::Tensor other = at::tensor({0, 7, 9, 3, 9, 1}, at::kLong).reshape({1, 6});
  EXPECT_EQ(clip_pooled_index(other, 2)[0].item<int64_t>(), 2);
  EXPECT_EQ(clip_pooled_index(other, 3)[0].item<int64_t>(), 3);
  EXPECT_EQ(clip_pooled_index(other, 5)[0].item<int64_t>(), 0);  // no eos: argmax of all-false
}

TEST(ClipText, BadIdsAreErrors) {
  auto model = ClipTextModel::load(fixture("clip_text"));  // vocab 1000, 77 positions
  EXPECT_THROW(model.forward(at::full({1, 5}, 1000, at::kLong)), Error);
  EXPECT_THROW(model.forward(at::full({1, 5}, -1, at::kLong)), Error);
  EXPECT_THROW(model.forward(at::zeros({1, 78}, at::kLong)), Error);
  EXPECT_THROW(model.forward(at::zeros({1, 5}, at::kFloat)), Error);
  EXPECT_THROW(model.forward(at::zeros({5}, at::kLong)), Error);
}

TEST(T5Encoder, BucketsAtTheFloat32Boundaries) {
  // 32 buckets, max distance 128: half 16 (+16 for keys after the query), exact below 8, then
  // 8 + trunc(log(r / 8) / log(16) * 8): r = 16, 32, 64 give exactly 2, 4, 6 before truncation.
  at::Tensor rel = at::tensor({0, 1, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 1000, -16, -32, -64, 16, 64, 500},
                              at::kLong);
  at::Tensor want = at::tensor({0, 17, 23, 24, 25, 26, 27, 28, 29, 30, 31, 31, 31, 10, 12, 14, 26, 30, 31}, at::kLong);
  // negative offsets (key before query) stay in the lower half
  at::Tensor neg = at::tensor({-1, -7, -8, -15, -31, -63, -127}, at::kLong);
  at::Tensor want_neg = at::tensor({1, 7, 8, 9, 11, 13, 15}, at::kLong);
  EXPECT_TRUE(at::equal(t5_relative_position_bucket(rel, true, 32, 128), want));
  EXPECT_TRUE(at::equal(t5_relative_position_bucket(neg, true, 32, 128), want_neg));
}

TEST(T5Encoder, BadIdsAndMissingWeightsAreErrors) {
  auto model = T5Encoder::load(fixture("t5_encoder"));  // vocab 500
  EXPECT_THROW(model.forward(at::full({1, 4}, 500, at::kLong)), Error);
  EXPECT_THROW(model.forward(at::zeros({4}, at::kLong)), Error);
  TempDir dir;
  copy_without("t5_encoder", "model.safetensors", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
               dir.path());
  EXPECT_THROW(T5Encoder::load(dir.path().string()), Error);
}
