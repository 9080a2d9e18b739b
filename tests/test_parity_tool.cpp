// omniflux-parity as a user runs it: on a copy of a fixture case whose reference outputs were
// nudged, it must flag exactly the outputs moved beyond tolerance, and report unknown components.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <sys/wait.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "omniflux/io/safetensors.h"
#include "test_util.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {
struct RunResult {
  int status = -1;
  std::vector<json> lines;
};

RunResult run_parity(const std::string& args) {
  RunResult r;
  const std::string cmd = std::string(OMNIFLUX_BIN_DIR) + "/omniflux-parity " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[8192];
  while (fgets(buf, sizeof buf, p)) r.lines.push_back(json::parse(buf));
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const json* line_for(const RunResult& r, const std::string& c, const std::string& out) {
  for (const auto& l : r.lines)
    if (l.value("case", "") == c && l.value("output", "") == out) return &l;
  return nullptr;
}
}  // namespace

TEST(ParityTool, FlagsOutputsBeyondToleranceAndUnknownCases) {
  TempDir dir;
  json manifest;
  std::ifstream(fixture("MANIFEST.json")) >> manifest;
  json spec = manifest["cases"]["flow_match_scheduler"];
  spec["files"]["io"] = "io.safetensors";
  json mine = {{"cases", {{"flow_match_scheduler", spec}, {"no_such_component", spec}}}};
  std::ofstream(dir.path() / "MANIFEST.json") << mine.dump();

  omniflux::SafetensorsFile io = omniflux::SafetensorsFile::open(fixture("flow_match_scheduler/io.safetensors"));
  std::map<std::string, at::Tensor> tensors;
  for (const auto& t : io.tensors()) tensors[t.name] = io.get(t.name).clone();
  const double tol_sig = spec["outputs"]["s0_sigmas"]["tolerance_max_abs"].get<double>();
  tensors["s0_sigmas"][3] += 3 * tol_sig;      // beyond tolerance: must fail
  tensors["s1_sigmas"][1] += 0.25 * tol_sig;   // within tolerance: must pass
  omniflux::save_safetensors((dir.path() / "io.safetensors").string(), tensors);

  RunResult r = run_parity(dir.path().string());
  EXPECT_EQ(r.status, 1);
  const json* bad = line_for(r, "flow_match_scheduler", "s0_sigmas");
  ASSERT_NE(bad, nullptr);
  EXPECT_FALSE((*bad)["pass"].get<bool>());
  EXPECT_NEAR((*bad)["max_abs_err"].get<double>(), 3 * tol_sig, 1e-7);
  const json* ok = line_for(r, "flow_match_scheduler", "s1_sigmas");
  ASSERT_NE(ok, nullptr);
  EXPECT_TRUE((*ok)["pass"].get<bool>());
  bool unsupported = false;
  for (const auto& l : r.lines)
    if (l.value("case", "") == "no_such_component") unsupported = l.value("status", "") == "not_supported";
  EXPECT_TRUE(unsupported);

  RunResult only = run_parity(dir.path().string() + " --case flow_match_scheduler");
  EXPECT_EQ(only.status, 1);  // s0_sigmas still fails
  RunResult missing = run_parity(dir.path().string() + " --case nope");
  EXPECT_EQ(missing.status, 2);
}

namespace {
// A fixture folder holding one case `name` (files copied, the manifest entry edited by `edit`).
void one_case_folder(const TempDir& dir, const std::string& name, const std::function<void(json&)>& edit) {
  json manifest;
  std::ifstream(fixture("MANIFEST.json")) >> manifest;
  json spec = manifest["cases"][name];
  fs::copy(fixture(name), dir.path() / name, fs::copy_options::recursive);
  edit(spec);
  std::ofstream(dir.path() / "MANIFEST.json") << json({{"cases", {{name, spec}}}}).dump();
}
}  // namespace

// A declared input the runner does not read is an error, not silence.
TEST(ParityTool, AnInputTheRunnerIgnoresIsAnError) {
  TempDir dir;
  one_case_folder(dir, "flow_match_scheduler", [](json& spec) {
    spec["inputs"]["s3_image_seq_len"] = spec["inputs"]["s0_image_seq_len"];
  });
  RunResult r = run_parity(dir.path().string());
  EXPECT_EQ(r.status, 1);
  bool flagged = false;
  for (const auto& l : r.lines)
    if (l.value("input", "") == "s3_image_seq_len") flagged = l.value("status", "") == "input_not_consumed";
  EXPECT_TRUE(flagged);
  // The shipped cases read every input they declare.
  RunResult all = run_parity(fixture("") + " --case flow_match_scheduler --case siglip2_vision --case qwen2_5_vl");
  for (const auto& l : all.lines) EXPECT_NE(l.value("status", ""), "input_not_consumed") << l.dump();
  EXPECT_EQ(all.status, 0);
}

// Every declared image is read: a two-image siglip2_vision case (the fixture image twice) must
// give, image by image, the single-image reference outputs.
TEST(ParityTool, ReadsEveryDeclaredImage) {
  TempDir dir;
  one_case_folder(dir, "siglip2_vision", [](json& spec) {
    spec["inputs"]["raw_image_1"] = spec["inputs"]["raw_image_0"];
    for (const char* g : {"outputs", "intermediates"})
      for (auto o = spec[g].begin(); o != spec[g].end(); ++o) {
        const size_t batch_dim = o.key() == "inter_layer_outputs" ? 1 : 0;  // [layers, B, ...]
        o.value()["shape"][batch_dim] = o.value()["shape"][batch_dim].get<int64_t>() * 2;
      }
  });
  const fs::path io_path = dir.path() / "siglip2_vision" / "io.safetensors";
  omniflux::SafetensorsFile io = omniflux::SafetensorsFile::open(fixture("siglip2_vision/io.safetensors"));
  std::map<std::string, at::Tensor> t;
  for (const auto& info : io.tensors()) {
    at::Tensor v = io.get(info.name).clone();
    if (info.name == "raw_image_0") t["raw_image_1"] = v;
    else if (info.name == "inter_layer_outputs") v = at::cat({v, v}, 1);  // [layers, B, ...]
    else if (info.name.rfind("raw_image", 0) != 0) v = at::cat({v, v}, 0);
    t[info.name] = v;
  }
  fs::remove(io_path);
  omniflux::save_safetensors(io_path.string(), t);
  RunResult r = run_parity(dir.path().string());
  ASSERT_FALSE(r.lines.empty());
  for (const auto& l : r.lines) EXPECT_TRUE(l.value("pass", false)) << l.dump();
  EXPECT_EQ(r.status, 0);
  const json* pv = line_for(r, "siglip2_vision", "pixel_values");
  ASSERT_NE(pv, nullptr);

  // A gap in the numbering (raw_image_0, raw_image_2) is an error.
  TempDir gap;
  one_case_folder(gap, "siglip2_vision", [](json& spec) { spec["inputs"]["raw_image_2"] = spec["inputs"]["raw_image_0"]; });
  RunResult g = run_parity(gap.path().string());
  EXPECT_EQ(g.status, 1);
  bool gap_error = false;
  for (const auto& l : g.lines)
    if (l.value("status", "") == "error") gap_error = l.value("detail", "").find("gap") != std::string::npos;
  EXPECT_TRUE(gap_error);
}
