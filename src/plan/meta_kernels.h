#pragma once
// Meta kernels omniflux supplies for the dry runs (see meta_kernels.cpp).
#include <string>
#include <vector>

namespace omniflux::plan {

// Registers them once per process (idempotent, thread-safe).
void ensure_meta_kernels();
// The aten op names (with overloads) they cover.
const std::vector<std::string>& supplied_meta_kernels();

}  // namespace omniflux::plan
