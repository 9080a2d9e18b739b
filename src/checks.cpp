#include "checks.h"

#include <cmath>
#include <sstream>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux {

void check_guidance(double value, const std::string& where) {
  if (!std::isfinite(value) || value < 0 || value > kMaxGuidance) {
    std::ostringstream got;
    got << value;
    throw Error("guidance scale out of range", where, "a finite number in [0, " + std::to_string(int(kMaxGuidance)) + "]",
                got.str());
  }
}

void check_context_length(int64_t prompt_len, int64_t new_tokens, int64_t max_positions, const std::string& where) {
  if (new_tokens < 0)
    throw Error("negative number of new tokens", where, ">= 0", std::to_string(new_tokens));
  if (prompt_len < 1 || prompt_len > max_positions)
    throw Error("prompt longer than the model's context", where,
                "1 to max_position_embeddings = " + std::to_string(max_positions) + " tokens",
                std::to_string(prompt_len) + " tokens");
  // prompt_len <= max_positions, so the subtraction cannot overflow.
  if (new_tokens > max_positions - prompt_len)
    throw Error("prompt plus new tokens exceed the model's context", where,
                "<= max_position_embeddings = " + std::to_string(max_positions) + ", so at most " +
                    std::to_string(max_positions - prompt_len) + " new tokens",
                std::to_string(prompt_len) + " + " + std::to_string(new_tokens));
}

int64_t checked_product(int64_t a, int64_t b, int64_t limit, const std::string& where) {
  if (a < 0 || b < 0 || (a != 0 && b > limit / a))
    throw Error("size out of range", where, "a product <= " + std::to_string(limit),
                std::to_string(a) + " x " + std::to_string(b));
  return a * b;
}

void check_finite(const at::Tensor& t, const std::string& stage) {
  // Meta tensors (dry runs) have no values to check.
  if (!t.defined() || t.is_meta() || !at::isFloatingType(t.scalar_type()) || t.numel() == 0) return;
  if (at::isfinite(t).all().item<bool>()) return;
  const int64_t nan = at::isnan(t).sum().item<int64_t>();
  const int64_t inf = at::isinf(t).sum().item<int64_t>();
  throw Error("non-finite values", stage, "finite numbers",
              std::to_string(nan) + " NaN and " + std::to_string(inf) + " Inf of " + std::to_string(t.numel()));
}

}  // namespace omniflux
