#pragma once
// omniflux-parity: runs reference-fixture cases (tests/fixtures/MANIFEST.json) and compares what
// omniflux computes with the reference outputs. Each component registers one runner per case it
// supports, in its own file of this folder:
//
//   OMNIFLUX_PARITY_CASE(flow_match_scheduler) {
//     ParityOutputs out;
//     out["s0_mu"] = ...;          // computed from ctx.input("s0_image_seq_len"), ...
//     return out;
//   }
//
// The runner returns tensors by the manifest's names. Every `outputs` entry must be returned;
// inputs that carry a tolerance and `inter_*` intermediates are compared when returned. Every
// declared input must be read through ctx.input() (or returned for comparison): run_case reports
// an input the runner left unread as an error. Numbered inputs (raw_image_0, raw_image_1, ...)
// come in any count through ctx.numbered_inputs().
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "omniflux/io/safetensors.h"
#include "omniflux/runtime.h"

namespace omniflux::parity {

using ParityOutputs = std::map<std::string, at::Tensor>;

struct ParityContext {
  std::string root;       // the fixtures folder (holding MANIFEST.json)
  std::string case_name;
  const nlohmann::json* spec = nullptr;  // the case's MANIFEST entry
  const SafetensorsFile* io = nullptr;   // the case's io.safetensors
  RuntimeOptions rt;

  // A tensor of io.safetensors (CPU, as stored); records the name as consumed.
  at::Tensor input(const std::string& name) const;
  // Every declared input named prefix + k (k = 0, 1, ...), in order: "raw_image_" gives
  // raw_image_0 .. raw_image_{n-1}; empty when none is declared; an Error when the numbers have a gap.
  std::vector<at::Tensor> numbered_inputs(const std::string& prefix) const;
  // A path from the case's "files" map, resolved against `root`.
  std::string file(const std::string& key) const;

  mutable std::set<std::string> consumed;  // names read through input()
};

using ParityRunner = std::function<ParityOutputs(const ParityContext&)>;

std::map<std::string, ParityRunner>& registry();

struct Registrar {
  Registrar(const char* name, ParityRunner run) { registry()[name] = std::move(run); }
};

}  // namespace omniflux::parity

#define OMNIFLUX_PARITY_CASE(NAME)                                                              \
  static omniflux::parity::ParityOutputs parity_run_##NAME(const omniflux::parity::ParityContext&); \
  static omniflux::parity::Registrar parity_reg_##NAME(#NAME, parity_run_##NAME);               \
  static omniflux::parity::ParityOutputs parity_run_##NAME(                                     \
      [[maybe_unused]] const omniflux::parity::ParityContext& ctx)
