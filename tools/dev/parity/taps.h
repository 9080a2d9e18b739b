#pragma once
// Parity helper: collects the model's tap("name", t) intermediates while in scope.
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "nn/debug.h"
#include "parity.h"

namespace omniflux::parity {

struct Taps {
  std::map<std::string, std::vector<at::Tensor>> seen;
  DebugScope scope{[this](const std::string& name, const at::Tensor& v) { seen[name].push_back(v.clone()); }};

  // Every value of `name` stacked on a new dim 0; undefined when never tapped.
  at::Tensor stacked(const std::string& name) const {
    auto it = seen.find(name);
    return it == seen.end() ? at::Tensor() : at::stack(it->second, 0);
  }
  at::Tensor last(const std::string& name) const {
    auto it = seen.find(name);
    return it == seen.end() ? at::Tensor() : it->second.back();
  }
  // Adds `name`'s last (or stacked) value to `out` under `key` when it was tapped.
  void put_last(ParityOutputs& out, const std::string& key, const std::string& name) const {
    if (auto t = last(name); t.defined()) out[key] = t;
  }
  void put_stacked(ParityOutputs& out, const std::string& key, const std::string& name) const {
    if (auto t = stacked(name); t.defined()) out[key] = t;
  }
};

}  // namespace omniflux::parity
