#pragma once
// The public omniflux::KVCache (omniflux/kv_cache.h) under its name inside the library, with the
// AttentionOptions its steps return.
#include "omniflux/kv_cache.h"
#include "nn/attention.h"

namespace omniflux::nn {

using KVCache = omniflux::KVCache;

}  // namespace omniflux::nn
