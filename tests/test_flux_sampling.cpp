// FLUX latent packing, position ids, seeded noise and the multi-axis rotary tables, against
// element-wise definitions and the flux_pipeline fixture.
#include <gtest/gtest.h>

#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "nn/rotary.h"
#include "nn/timestep.h"
#include "sampling/latents.h"
#include "test_util.h"

using namespace omniflux;

TEST(FluxLatents, PackPutsTheTwoByTwoPatchInChannelMinorOrder) {
  at::Tensor x = at::randn({2, 3, 4, 6});
  at::Tensor p = pack_latents(x);
  ASSERT_EQ(p.sizes(), (at::IntArrayRef{2, 6, 12}));
  auto xa = x.accessor<float, 4>();
  auto pa = p.accessor<float, 3>();
  for (int b = 0; b < 2; ++b)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 4; ++y)
        for (int xx = 0; xx < 6; ++xx) {
          const int token = (y / 2) * 3 + xx / 2, ch = c * 4 + (y % 2) * 2 + xx % 2;
          ASSERT_EQ(pa[b][token][ch], xa[b][c][y][xx]);
        }
  EXPECT_TRUE(at::equal(unpack_latents(p, 4, 6), x));
}

TEST(FluxLatents, BadShapesAreErrors) {
  EXPECT_THROW(pack_latents(at::zeros({1, 16, 3, 4})), Error);
  EXPECT_THROW(pack_latents(at::zeros({16, 4, 4})), Error);
  EXPECT_THROW(unpack_latents(at::zeros({1, 6, 64}), 4, 4), Error);
  EXPECT_THROW(unpack_latents(at::zeros({1, 4, 63}), 4, 4), Error);
  EXPECT_THROW(latent_image_ids(3, 4), Error);
  EXPECT_THROW(flux_latent_size(8), Error);
  EXPECT_THROW(flux_initial_noise(0, 1, 16, 0, 4), Error);
}

TEST(FluxLatents, LatentSizeIsTwiceSixteenths) {
  EXPECT_EQ(flux_latent_size(1024), 128);
  EXPECT_EQ(flux_latent_size(64), 8);
  EXPECT_EQ(flux_latent_size(1000), 124);  // 2 * (1000 // 16)
}

TEST(FluxLatents, ImageIdsAreIndexRowColumnRowMajor) {
  at::Tensor ids = latent_image_ids(4, 6, 1);
  ASSERT_EQ(ids.sizes(), (at::IntArrayRef{6, 3}));
  EXPECT_EQ(ids.scalar_type(), at::kFloat);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(ids[r * 3 + c][0].item<float>(), 1.0f);
      EXPECT_EQ(ids[r * 3 + c][1].item<float>(), float(r));
      EXPECT_EQ(ids[r * 3 + c][2].item<float>(), float(c));
    }
  EXPECT_TRUE(at::equal(text_ids(5), at::zeros({5, 3})));
}

TEST(FluxLatents, SeededNoiseReproducesTorchManualSeed) {
  auto io = SafetensorsFile::open(fixture("flux_pipeline/io.safetensors"));
  at::Tensor ref = io.get("seed_noise");
  const auto seed = static_cast<uint64_t>(io.get("seed").item<int64_t>());
  at::Tensor got = flux_initial_noise(seed, 1, 16, 8, 8);
  ASSERT_EQ(got.sizes(), ref.sizes());
  // MANIFEST: the scalar and AVX2 normal kernels differ by ~1e-6; tolerance 5e-6.
  EXPECT_LE((got - ref).abs().max().item<double>(), 5e-6);
  EXPECT_TRUE(at::equal(got, flux_initial_noise(seed, 1, 16, 8, 8)));
  EXPECT_FALSE(at::equal(got, flux_initial_noise(seed + 1, 1, 16, 8, 8)));
  EXPECT_EQ(flux_initial_noise(seed, 1, 16, 8, 8, at::kBFloat16).scalar_type(), at::kBFloat16);
}

TEST(FluxRope, AxesTablesMatchPerAxisFrequencies) {
  // ids (a, r, c); axis dims (4, 6, 6): channel 2j of axis k rotates by pos_k / 10000^(2j / d_k).
  at::Tensor ids = at::tensor({0.f, 3.f, 5.f, 1.f, 2.f, 7.f}).reshape({2, 3});
  auto [cos, sin] = nn::rope_axes_cos_sin(ids, {4, 6, 6}, 10000.0);
  ASSERT_EQ(cos.sizes(), (at::IntArrayRef{2, 16}));
  const int dims[3] = {4, 6, 6};
  for (int t = 0; t < 2; ++t) {
    int off = 0;
    for (int a = 0; a < 3; ++a) {
      for (int j = 0; j < dims[a] / 2; ++j) {
        const double ang = ids[t][a].item<double>() / std::pow(10000.0, 2.0 * j / dims[a]);
        for (int e = 0; e < 2; ++e) {
          EXPECT_FLOAT_EQ(cos[t][off + 2 * j + e].item<float>(), static_cast<float>(std::cos(ang)));
          EXPECT_FLOAT_EQ(sin[t][off + 2 * j + e].item<float>(), static_cast<float>(std::sin(ang)));
        }
      }
      off += dims[a];
    }
  }
  EXPECT_THROW(nn::rope_axes_cos_sin(ids, {4, 6}, 10000.0), Error);
  EXPECT_THROW(nn::rope_axes_cos_sin(ids, {4, 5, 7}, 10000.0), Error);
}

TEST(FluxTimestep, SinusoidIsCosThenSin) {
  at::Tensor t = at::tensor({750.0f, 3500.0f});
  at::Tensor e = nn::timestep_embedding(t, 8, true, 0.0);
  ASSERT_EQ(e.sizes(), (at::IntArrayRef{2, 8}));
  for (int b = 0; b < 2; ++b)
    for (int k = 0; k < 4; ++k) {
      const double arg = t[b].item<double>() * std::exp(-std::log(10000.0) * k / 4.0);
      EXPECT_NEAR(e[b][k].item<float>(), std::cos(arg), 2e-3);  // float32 arguments of ~1e3 rad
      EXPECT_NEAR(e[b][4 + k].item<float>(), std::sin(arg), 2e-3);
    }
  EXPECT_THROW(nn::timestep_embedding(at::zeros({2, 1}), 8), Error);
}
