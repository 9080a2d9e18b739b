// FluxPipeline on the flux_pipeline fixture folder: size validation, cancel within one step,
// true CFG, loading errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "nn/debug.h"
#include "omniflux/pipelines/flux.h"
#include "sampling/latents.h"
#include "test_util.h"

using namespace omniflux;
namespace fs = std::filesystem;

namespace {

// The fixture shares its tokenizer files with tests/fixtures/tokenizers through relative symlinks,
// which a model folder may only do with allow_outside_paths.
RuntimeOptions shared_files() {
  RuntimeOptions rt;
  rt.allow_outside_paths = true;
  return rt;
}

struct Fixture {
  SafetensorsFile io = SafetensorsFile::open(fixture("flux_pipeline/io.safetensors"));
  FluxPipeline pipe = FluxPipeline::load(fixture("flux_pipeline"), shared_files());
  FluxPromptEmbeds cond{io.get("pooled_prompt_embeds"), io.get("prompt_embeds")};
  at::Tensor noise = io.get("initial_noise");
};

Fixture& fx() {
  static Fixture f;
  return f;
}

}  // namespace

TEST(FluxPipeline, SizesMustBeMultiplesOf16WithinLimits) {
  EXPECT_NO_THROW(flux_check_size(1024, 1024));
  EXPECT_NO_THROW(flux_check_size(16, 4096));
  EXPECT_THROW(flux_check_size(1000, 1024), Error);
  EXPECT_THROW(flux_check_size(1024, 8), Error);
  EXPECT_THROW(flux_check_size(0, 1024), Error);
  EXPECT_THROW(flux_check_size(-16, 1024), Error);
  EXPECT_THROW(flux_check_size(4112, 1024), Error);
  EXPECT_THROW(fx().pipe.decode(fx().io.get("final_latents"), 64, 60), Error);
}

TEST(FluxPipeline, CancelStopsWithinOneStep) {
  auto& f = fx();
  FluxOptions opt;
  opt.steps = 4;
  std::vector<int64_t> seen;
  int forwards = 0;
  DebugScope scope([&](const std::string& name, const at::Tensor&) { forwards += name == "flux.noise_pred"; });
  auto r = f.pipe.denoise(f.noise, f.cond, nullptr, opt, [&](const std::string& stage, int64_t step, int64_t total) {
    EXPECT_EQ(stage, "denoise");
    EXPECT_EQ(total, 4);
    seen.push_back(step);
    return step < 2;  // cancel after the second step
  });
  EXPECT_FALSE(r.has_value());
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(forwards, 2);
  // cancelling before the first step runs no step at all
  forwards = 0;
  auto r0 = f.pipe.denoise(f.noise, f.cond, nullptr, opt, [](const std::string&, int64_t, int64_t) { return false; });
  EXPECT_FALSE(r0.has_value());
  EXPECT_EQ(forwards, 0);
}

TEST(FluxPipeline, TrueCfgCombinesTwoPredictions) {
  auto& f = fx();
  FluxOptions opt;
  opt.steps = 2;
  at::Tensor plain = *f.pipe.denoise(f.noise, f.cond, nullptr, opt);
  // uncond = cond: neg + s (pos - neg) = pos for any scale
  opt.true_cfg_scale = 4.0;
  at::Tensor same = *f.pipe.denoise(f.noise, f.cond, &f.cond, opt);
  EXPECT_LE((same - plain).abs().max().item<double>(), 1e-5);
  // a different negative with scale 1 is not used (diffusers: do_true_cfg needs scale > 1)
  FluxPromptEmbeds neg{f.cond.pooled * -1, f.cond.t5.flip({1})};
  opt.true_cfg_scale = 1.0;
  EXPECT_TRUE(at::equal(*f.pipe.denoise(f.noise, f.cond, &neg, opt), plain));
  // with scale > 1 it is: first step by hand, v = vn + s (vp - vn)
  opt.true_cfg_scale = 3.0;
  opt.steps = 1;
  std::vector<at::Tensor> preds;
  at::Tensor cfg = *f.pipe.denoise(f.noise, f.cond, &neg, opt);
  FluxOptions one;
  one.steps = 1;
  DebugScope scope([&](const std::string& name, const at::Tensor& t) {
    if (name == "flux.noise_pred") preds.push_back(t.clone());
  });
  f.pipe.denoise(f.noise, f.cond, nullptr, one);
  f.pipe.denoise(f.noise, neg, nullptr, one);
  ASSERT_EQ(preds.size(), 2u);
  at::Tensor v = preds[1] + 3.0 * (preds[0] - preds[1]);
  at::Tensor expect = pack_latents(f.noise) + (0.0 - 1.0) * v;  // one step from sigma 1 to 0
  EXPECT_LE((cfg - expect).abs().max().item<double>(), 1e-5);
}

TEST(FluxPipeline, BadInputsAreErrors) {
  auto& f = fx();
  FluxOptions opt;
  opt.steps = 1;
  EXPECT_THROW(f.pipe.denoise(at::zeros({1, 16, 7, 8}), f.cond, nullptr, opt), Error);
  EXPECT_THROW(f.pipe.denoise(at::zeros({1, 4, 8, 8}), f.cond, nullptr, opt), Error);
  EXPECT_THROW(f.pipe.denoise(at::zeros({2, 16, 8, 8}), f.cond, nullptr, opt), Error);  // batch 2, prompt batch 1
  opt.steps = 0;
  EXPECT_THROW(f.pipe.denoise(f.noise, f.cond, nullptr, opt), Error);
  EXPECT_THROW(f.pipe.encode_ids(at::full({1, 77}, 49408, at::kLong), f.io.get("t5_input_ids")), Error);
}

TEST(FluxPipeline, IncompleteFoldersAreErrors) {
  TempDir dir;
  EXPECT_THROW(FluxPipeline::load(dir.path().string()), Error);  // no model_index.json
  fs::copy_file(fixture("flux_pipeline/model_index.json"), dir.path() / "model_index.json");
  EXPECT_THROW(FluxPipeline::load(dir.path().string()), Error);  // no components
  EXPECT_THROW(FluxPipeline::load(fixture("flux_pipeline/missing")), Error);
}
