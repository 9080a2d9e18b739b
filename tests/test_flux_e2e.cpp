// FLUX.1-dev text-to-image end to end on a tiny random-weight folder written by omniflux-tiny:
// prompt -> PNG through the CLI, reproducible bytes for a seed, cancel within one step.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/flux.h"
#include "sampling/latents.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace omniflux;

namespace {

// One tiny folder for the whole suite.
const fs::path& tiny_root() { return tiny_folders(3, {"flux_1_dev"}); }

int run_flux(const fs::path& out, const std::string& extra = "", int seed = 11) {
  const std::string cmd = bin("omniflux-flux") + " -m " + (tiny_root() / "flux.1-dev").string() +
                          " -p 'A cat holding a sign that says hello world' -W 64 -H 48 --steps 3 --seed " +
                          std::to_string(seed) + " --max-sequence-length 32 --quiet -o " + out.string() + " " + extra;
  return std::system(cmd.c_str());
}

}  // namespace

TEST(FluxEndToEnd, TinyFolderHasTheRealLayout) {
  const fs::path d = tiny_root() / "flux.1-dev";
  for (const char* f : {"model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                        "text_encoder/model.safetensors", "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
                        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer_2/spiece.model",
                        "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors", "vae/config.json",
                        "vae/diffusion_pytorch_model.safetensors"})
    EXPECT_TRUE(fs::is_regular_file(d / f)) << f;
  // the real tokenizer files, byte for byte
  EXPECT_EQ(read_bytes(d / "tokenizer/vocab.json"), read_bytes(fixture("tokenizers/clip/vocab.json")));
  EXPECT_EQ(read_bytes(d / "tokenizer_2/spiece.model"), read_bytes(fixture("tokenizers/t5/spiece.model")));
  EXPECT_NO_THROW(FluxPipeline::load(d.string()));
}

TEST(FluxEndToEnd, PromptToPngIsReproducible) {
  TempDir out;
  ASSERT_EQ(run_flux(out.path() / "a.png"), 0);
  ASSERT_EQ(run_flux(out.path() / "b.png"), 0);
  Image img = load_image((out.path() / "a.png").string());
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 48);
  EXPECT_EQ(read_bytes(out.path() / "a.png"), read_bytes(out.path() / "b.png"));
  auto text = read_png_text((out.path() / "a.png").string());
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].first, "parameters");
  EXPECT_NE(text[0].second.find("A cat holding a sign"), std::string::npos);
  EXPECT_NE(text[0].second.find("Seed: 11"), std::string::npos);
  EXPECT_NE(text[0].second.find("Steps: 3"), std::string::npos);
  // another seed, another image
  ASSERT_EQ(run_flux(out.path() / "c.png", "", 12), 0);
  EXPECT_NE(read_bytes(out.path() / "a.png"), read_bytes(out.path() / "c.png"));
}

TEST(FluxEndToEnd, CliRejectsBadArguments) {
  TempDir out;
  // (exit status, stderr) of omniflux-flux on the tiny folder with `args`.
  auto run = [&](const std::string& args) {
    const fs::path e = out.path() / "err.txt";
    const std::string cmd = bin("omniflux-flux") + " -m " + (tiny_root() / "flux.1-dev").string() +
                            " -p cat --max-sequence-length 8 --quiet " + args + " 2> " + e.string();
    const int st = std::system(cmd.c_str());
    return std::make_pair(WIFEXITED(st) ? WEXITSTATUS(st) : -1, read_bytes(e));
  };
  const std::string o = " -o " + (out.path() / "x.png").string();
  auto [rc, err] = run("-W 100" + o);  // not a multiple of 16
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("-W/--width"), std::string::npos) << err;
  std::tie(rc, err) = run("--steps x" + o);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("--steps"), std::string::npos) << err;
  std::tie(rc, err) = run("--threads 4294967297" + o);  // not 1
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("--threads"), std::string::npos) << err;
  std::tie(rc, err) = run("--guidance 1e300" + o);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("--guidance"), std::string::npos) << err;
  std::tie(rc, err) = run("--seed 18446744073709551616" + o);  // not a silent wrap
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("--seed"), std::string::npos) << err;
  std::tie(rc, err) = run("--steps 2 --steps 3" + o);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("more than once"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out.path() / "x.png"));
  // Not a FLUX folder: a runtime error.
  const std::string missing = bin("omniflux-flux") + " -m " + out.path().string() + " -p hi -o " +
                              (out.path() / "y.png").string() + " 2> /dev/null";
  EXPECT_EQ(WEXITSTATUS(std::system(missing.c_str())), 1);
  // A failed write is a failure.
  if (fs::exists("/dev/full")) {
    std::tie(rc, err) = run("-W 32 -H 32 --steps 1 -o /dev/full");
    EXPECT_EQ(rc, 1);
    EXPECT_NE(err.find("/dev/full"), std::string::npos) << err;
  }
}

TEST(FluxEndToEnd, GenerateMatchesStagesAndCancelsWithinOneStep) {
  auto pipe = FluxPipeline::load((tiny_root() / "flux.1-dev").string());
  FluxOptions opt;
  opt.prompt = "a red cube";
  opt.width = 32;
  opt.height = 32;
  opt.steps = 5;
  opt.max_sequence_length = 16;
  opt.seed = 5;
  std::vector<std::pair<std::string, int64_t>> seen;
  auto img = pipe.generate(opt, [&](const std::string& stage, int64_t step, int64_t) {
    seen.emplace_back(stage, step);
    return !(stage == "denoise" && step == 2);
  });
  EXPECT_FALSE(img.has_value());
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), (std::pair<std::string, int64_t>{"denoise", 2}));  // no call after the cancel
  auto full = pipe.generate(opt);
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->width, 32);
  // the same image from the stages
  auto e = pipe.encode_prompt(opt.prompt, opt.prompt, opt.max_sequence_length);
  FluxOptions d;
  d.steps = 5;
  auto lat = pipe.denoise(flux_initial_noise(5, 1, 16, 4, 4), e, nullptr, d);
  at::Tensor u8 = FluxPipeline::to_uint8(pipe.decode(*lat, 32, 32))[0];
  EXPECT_EQ(std::vector<uint8_t>(u8.data_ptr<uint8_t>(), u8.data_ptr<uint8_t>() + u8.numel()), full->rgb);
}
