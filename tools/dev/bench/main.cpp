// omniflux-bench [CASE ...] [--device D] [--dtype T] [--threads N] [--warmup N] [--iters N]
//                [key=value ...] [--list]   (--help lists the flags)
// Runs the named cases (all when none is named) and prints one JSON line per measurement.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include "bench.h"
#include "cli.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"

using nlohmann::json;

namespace omniflux::bench {

std::map<std::string, BenchCase>& registry() {
  static std::map<std::string, BenchCase> r;
  return r;
}

std::string BenchContext::arg(const std::string& key, const std::string& def) const {
  auto it = args.find(key);
  return it == args.end() ? def : it->second;
}

// key=value arguments parse as strictly as flags (tools/common): whole, finite, no wrap.
int64_t BenchContext::arg_int(const std::string& key, int64_t def) const {
  auto it = args.find(key);
  if (it == args.end()) return def;
  return cli::parse_int(key, it->second, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
}

double BenchContext::arg_double(const std::string& key, double def) const {
  auto it = args.find(key);
  if (it == args.end()) return def;
  const double big = std::numeric_limits<double>::max();
  return cli::parse_double(key, it->second, -big, big);
}

void BenchContext::sync() const {
  if (rt.torch_device().is_cuda()) torch::cuda::synchronize();
}

double BenchContext::time_ms(const std::function<void()>& fn) const {
  for (int i = 0; i < warmup; ++i) fn();
  sync();
  std::vector<double> ms;
  for (int i = 0; i < std::max(1, iters); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    sync();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void BenchContext::report(json line) const {
  json out = {{"case", case_name}, {"device", rt.device},
              {"dtype", std::string(c10::toString(rt.compute_dtype()))}};
  if (!rt.torch_device().is_cuda()) out["threads"] = at::get_num_threads();
  if (rt.decode_graphs) out["decode_graphs"] = true;
  if (rt.parallel) {
    // Several ranks: rank 0 reports; each rank's time includes waiting for the others.
    if (!rt.writes_output()) return;
    out["ranks"] = rt.parallel->world_size();
    out["cfg_parallel"] = rt.parallel->options().cfg;
    out["sequence_parallel"] = rt.parallel->sequence_group() != nullptr;
    out["tensor_parallel"] = rt.parallel->tensor_group() != nullptr;
  }
  for (auto it = line.begin(); it != line.end(); ++it) out[it.key()] = it.value();
  std::cout << out.dump() << std::endl;
}

}  // namespace omniflux::bench

int main(int argc, char** argv) {
  using namespace omniflux::bench;
  namespace cli = omniflux::cli;
  return cli::run("omniflux-bench", [&] {
    BenchContext base;
    std::vector<std::string> words, names;
    bool list = false;
    cli::Parser p("omniflux-bench",
                  "Runs the named cases (all when none is named) and prints one JSON line per measurement.");
    p.positionals("CASE|key=value", &words, "cases to run (--list shows them) and their key=value arguments");
    p.integer("--warmup", &base.warmup, 0, 1000, "N", "untimed runs first");
    p.integer("--iters", &base.iters, 1, 100000, "N", "timed runs (the median is reported)");
    p.toggle("--list", &list, "list the cases");
    cli::add_runtime_flags(p, &base.rt, /*with_offload=*/false);
    cli::add_parallel_flags(p);
    if (!p.parse(argc, argv)) return cli::kExitOk;
    for (const auto& w : words) {
      const size_t eq = w.find('=');
      if (eq == std::string::npos) {
        names.push_back(w);
      } else {
        if (eq == 0) throw cli::UsageError("argument without a key", "omniflux-bench", "key=value", w);
        if (base.args.count(w.substr(0, eq)))
          throw cli::UsageError("argument given more than once", w.substr(0, eq), "one value", w);
        base.args[w.substr(0, eq)] = w.substr(eq + 1);
      }
    }
    if (list) {
      for (const auto& [name, c] : registry()) std::printf("%-24s %s\n", name.c_str(), c.help.c_str());
      return cli::kExitOk;
    }
    for (const auto& n : names)
      if (!registry().count(n)) throw cli::UsageError("unknown bench case", n, "one of --list", n);
    cli::join_ranks(base.rt);
    cli::apply_runtime(base.rt);
    if (names.empty())
      for (const auto& kv : registry()) names.push_back(kv.first);
    for (const auto& n : names) {
      BenchContext ctx = base;
      ctx.case_name = n;
      c10::InferenceMode inference;
      registry()[n].run(ctx);
    }
    return cli::kExitOk;
  });
}
