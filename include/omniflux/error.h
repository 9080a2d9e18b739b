#pragma once
// omniflux::Error: the one exception type of the library. Every message says what went wrong,
// where (file, tensor, field, argument), and, when it applies, what was expected and what was got.
#include <stdexcept>
#include <cstdint>
#include <string>
#include <vector>

namespace omniflux {

class Error : public std::runtime_error {
 public:
  Error(std::string what, std::string where, std::string expected = {}, std::string got = {});

  const std::string& what_part() const { return what_; }
  const std::string& where() const { return where_; }
  const std::string& expected() const { return expected_; }
  const std::string& got() const { return got_; }

 private:
  std::string what_, where_, expected_, got_;
};

// Formats a shape like [3, 4] for messages.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace omniflux
