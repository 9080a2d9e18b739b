// omniflux-parity as a user runs it: on a copy of a fixture case whose reference outputs were
// nudged, it must flag exactly the outputs moved beyond tolerance, and report unknown components.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
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
