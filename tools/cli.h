#pragma once
// Shared by the example binaries: a flag's value as a number (or an omniflux::Error naming the
// flag), and a Ctrl-C flag the progress callbacks poll to cancel cleanly within one step.
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "omniflux/error.h"

namespace omniflux::cli {

inline int64_t to_int(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) throw omniflux::Error("not an integer", flag, "an integer", v);
  return x;
}

inline double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) throw omniflux::Error("not a number", flag, "a number", v);
  return x;
}

inline std::atomic<bool> g_interrupted{false};
inline void on_sigint(int) { g_interrupted = true; }

}  // namespace omniflux::cli
