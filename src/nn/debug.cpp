#include "nn/debug.h"

namespace omniflux {

namespace detail {
thread_local DebugHook* current_debug_hook = nullptr;
}

namespace {
thread_local DebugHook active_hook;
}

DebugScope::DebugScope(DebugHook hook) : previous_(std::move(active_hook)) {
  active_hook = std::move(hook);
  detail::current_debug_hook = active_hook ? &active_hook : nullptr;
}

DebugScope::~DebugScope() {
  active_hook = std::move(previous_);
  detail::current_debug_hook = active_hook ? &active_hook : nullptr;
}

}  // namespace omniflux
