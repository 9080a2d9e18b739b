#include "omniflux/error.h"

namespace omniflux {

static std::string format_error(const std::string& what, const std::string& where,
                                const std::string& expected, const std::string& got) {
  std::string m = what;
  if (!where.empty()) m += " (" + where + ")";
  if (!expected.empty() || !got.empty()) {
    m += ": expected " + (expected.empty() ? std::string("?") : expected);
    m += ", got " + (got.empty() ? std::string("?") : got);
  }
  return m;
}

Error::Error(std::string what, std::string where, std::string expected, std::string got)
    : std::runtime_error(format_error(what, where, expected, got)),
      what_(std::move(what)),
      where_(std::move(where)),
      expected_(std::move(expected)),
      got_(std::move(got)) {}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace omniflux
