#pragma once
// Checks shared by every entry point, so each says the same thing the same way, before the work:
// guidance scales, context length, sizes that multiply, and non-finite results.
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace omniflux {

// Guidance and CFG scales: finite and in [0, kMaxGuidance] (1e300 would become Inf in float32).
constexpr double kMaxGuidance = 1000.0;
void check_guidance(double value, const std::string& where);

// The one context-length rule: a prompt of `prompt_len` tokens plus `new_tokens` generated ones must
// fit `max_positions` (max_position_embeddings). Computed without overflow; `where` names the entry
// point ("X-Omni chat", "Qwen2.5-VL answer", ...).
void check_context_length(int64_t prompt_len, int64_t new_tokens, int64_t max_positions, const std::string& where);

// a * b for non-negative sizes, or an Error naming `where` when it exceeds `limit`.
int64_t checked_product(int64_t a, int64_t b, int64_t limit, const std::string& where);

// Throws Error("non-finite values", stage, ...) when `t` holds NaN or Inf: a NaN weight, a zero
// image_std or a degenerate scheduler reports the stage instead of a black image or "!!!!".
void check_finite(const at::Tensor& t, const std::string& stage);

}  // namespace omniflux
