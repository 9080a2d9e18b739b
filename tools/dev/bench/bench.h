#pragma once
// omniflux-bench: speed measurements that print one JSON line each. Components register cases in
// their own files of this folder:
//
//   OMNIFLUX_BENCH_CASE(qwen2_decode, "decode tokens/s; args: hidden=, layers=, ...") {
//     auto model = ...;                          // random weights of the shape ctx.arg_int(...) asks
//     double ms = ctx.time_ms([&] { model.decode_one(...); });
//     ctx.report({{"shape", "..."}, {"metric", "decode"}, {"value", 1000.0 / ms}, {"unit", "tok/s"}});
//   }
//
// report() adds case, device and dtype. Timing syncs the device around each run and reports the
// median of ctx.iters runs after ctx.warmup runs.
#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "omniflux/runtime.h"

namespace omniflux::bench {

struct BenchContext {
  std::string case_name;
  RuntimeOptions rt;
  std::map<std::string, std::string> args;  // from key=value arguments
  int warmup = 2;
  int iters = 5;

  std::string arg(const std::string& key, const std::string& def) const;
  int64_t arg_int(const std::string& key, int64_t def) const;
  double arg_double(const std::string& key, double def) const;
  // Median wall time of `fn` in milliseconds, device synchronised.
  double time_ms(const std::function<void()>& fn) const;
  void sync() const;
  void report(nlohmann::json line) const;
};

struct BenchCase {
  std::string help;
  std::function<void(BenchContext&)> run;
};
std::map<std::string, BenchCase>& registry();

struct Registrar {
  Registrar(const char* name, const char* help, std::function<void(BenchContext&)> run) {
    registry()[name] = {help, std::move(run)};
  }
};

}  // namespace omniflux::bench

#define OMNIFLUX_BENCH_CASE(NAME, HELP)                                                      \
  static void bench_run_##NAME(omniflux::bench::BenchContext&);                            \
  static omniflux::bench::Registrar bench_reg_##NAME(#NAME, HELP, bench_run_##NAME);       \
  static void bench_run_##NAME([[maybe_unused]] omniflux::bench::BenchContext& ctx)
