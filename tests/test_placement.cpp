// Placement without communication (RuntimeOptions::placement, docs/distributed.md): components on
// other devices than --device. Two devices cannot be had on this CPU machine, so the tests check the
// options, the plan per device, and that a placement naming the CPU everywhere changes nothing.
#include <gtest/gtest.h>

#include <string>

#include "omniflux/error.h"
#include "omniflux/plan.h"
#include "omniflux/runtime.h"
#include "test_util.h"

namespace fs = std::filesystem;
using omniflux::RuntimeOptions;

namespace {

TEST(Placement, OptionsNameTheComponentAndKeepOneKindOfDevice) {
  RuntimeOptions rt;
  rt.device = "cuda:0";
  rt.placement = {{"dit", "cuda:1"}};
  EXPECT_EQ(rt.on("dit").device, "cuda:1");
  EXPECT_EQ(rt.on("text").device, "cuda:0");
  rt.validate();
  rt.placement = {{"transformer", "cuda:1"}};
  try {
    rt.validate();
    FAIL() << "an unknown component was accepted";
  } catch (const omniflux::Error& e) {
    EXPECT_EQ(e.got(), "'transformer'");
    EXPECT_NE(e.expected().find("text, dit, vae, vlm, siglip, lm, vq"), std::string::npos);
  }
  rt.placement = {{"text", "cpu"}};  // a CPU component beside CUDA ones: another dtype, refused
  EXPECT_THROW(rt.validate(), omniflux::Error);
  rt.placement = {{"dit", "cuda:1"}};
  rt.offload = omniflux::Offload::Model;
  EXPECT_THROW(rt.validate(), omniflux::Error);
}

omniflux::plan::ComponentPlan component(const std::string& name, int64_t weights, int64_t activation, int64_t kv = 0) {
  omniflux::plan::ComponentPlan c;
  c.name = name;
  c.weights.bytes_bf16 = weights;
  c.weights.bytes_fp8 = weights / 2;
  c.largest_activation.bytes = activation;
  c.kv_cache_bytes = kv;
  return c;
}

TEST(Placement, ThePlanSumsEachDevice) {
  constexpr int64_t G = int64_t(1) << 30;
  const std::vector<omniflux::plan::ComponentPlan> plans = {
      component("qwen2_5_vl_lm", 14 * G, G / 2, G / 4), component("clip_text", G / 4, 0), component("t5_encoder", 9 * G, G / 8),
      component("uniworld_dit", 22 * G, G), component("flux_vae", G / 4, 2 * G)};
  RuntimeOptions rt;
  rt.device = "cuda:0";
  rt.placement = {{"dit", "cuda:1"}, {"vae", "cuda:1"}};
  const std::string t = omniflux::plan::placement_table(plans, rt, {"bf16"}, 24);
  auto line = [&](const std::string& device) {
    const size_t at = t.find("\n" + device + " ");
    return at == std::string::npos ? std::string() : t.substr(at + 1, t.find('\n', at + 1) - at - 1);
  };
  // cuda:0: weights 14 + 0.25 + 9, the largest extra 2 x 0.5 + 0.25 (the LM's activation and KV
  // cache), context 1: 25.5. cuda:1: weights 22 + 0.25, the largest extra 2 x 2 (the VAE), context 1.
  const std::string a = line("cuda:0"), b = line("cuda:1");
  EXPECT_NE(a.find("25.50 no"), std::string::npos) << t;
  EXPECT_NE(a.find("qwen2_5_vl_lm clip_text t5_encoder"), std::string::npos) << t;
  EXPECT_NE(b.find("27.25 no"), std::string::npos) << t;
  EXPECT_NE(b.find("uniworld_dit flux_vae"), std::string::npos) << t;
  EXPECT_EQ(omniflux::plan::placement_of("xomni_lm"), "lm");
  EXPECT_THROW(omniflux::plan::placement_of("something"), omniflux::Error);
}

#ifdef OMNIFLUX_BIN_DIR
// --dry-run plans a placement for GPUs this machine does not have.
TEST(Placement, DryRunShowsEachDevicesPeak) {
  const fs::path& d = tiny_folders(5, {"flux_1_dev", "uniworld_v1", "siglip2"});
  Child c({bin("omniflux-uniworld"), "-m", (d / "uniworld-v1").string(), "--flux", (d / "flux.1-dev").string(), "--siglip",
           (d / "siglip2").string(), "-p", "x", "--dry-run", "--device", "cuda:0,dit=cuda:1"});
  ASSERT_EQ(c.wait(), 0) << c.err();
  EXPECT_NE(c.out().find("peak memory per device with this placement"), std::string::npos) << c.out();
  const size_t one = c.out().find("\ncuda:1 ");
  ASSERT_NE(one, std::string::npos) << c.out();
  EXPECT_NE(c.out().find("uniworld_dit", one), std::string::npos);
  EXPECT_NE(c.out().find("\ncuda:0 "), std::string::npos);
}

// On the CPU a placement naming the CPU for every component runs the same computation.
TEST(Placement, ACpuPlacementChangesNothing) {
  const fs::path& d = tiny_folders(5, {"flux_1_dev"});
  TempDir out;
  auto run = [&](const std::string& device, const std::string& png) {
    Child c({bin("omniflux-flux"), "-m", (d / "flux.1-dev").string(), "-p", "a cube", "-W", "64", "-H", "64", "--steps", "2",
             "--threads", "1", "--quiet", "--device", device, "-o", (out.path() / png).string()});
    EXPECT_EQ(c.wait(), 0) << c.err();
  };
  run("cpu", "a.png");
  run("cpu,dit=cpu,text=cpu,vae=cpu", "b.png");
  EXPECT_EQ(read_bytes(out.path() / "a.png"), read_bytes(out.path() / "b.png"));
  // Garbage in --device: a usage error naming what is wrong, before anything loads.
  for (const auto& [value, says] : std::vector<std::pair<std::string, std::string>>{
           {"cpu,transformer=cpu", "unknown component in the placement"},
           {"cpu,cpu", "more than one default device"},
           {"cpu,dit", "more than one default device"},
           {"cpu,dit=cpu,dit=cpu", "a component placed twice"},
           {"cpu,dit=gpu", "invalid device"},
           {"cpu,dit=", "invalid device"},
           {"cpu,=cpu", "unknown component in the placement"},
           {"cpu,dit=cuda:0", "same kind of device"}}) {
    Child bad({bin("omniflux-flux"), "-m", (d / "flux.1-dev").string(), "-p", "x", "--device", value});
    EXPECT_EQ(WEXITSTATUS(bad.wait()), 2) << value;
    EXPECT_NE(bad.err().find(says), std::string::npos) << value << ": " << bad.err();
  }
}
#endif

}  // namespace
