#pragma once
// Meta kernels omniflux supplies for the dry runs (see meta_kernels.cpp).
namespace omniflux::plan {

// Registers them once per process (idempotent, thread-safe). The list: plan::supplied_meta_kernels().
void ensure_meta_kernels();

}  // namespace omniflux::plan
