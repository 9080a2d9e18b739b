#pragma once
// Named intermediates (docs/style.md §Named intermediates). Models call tap("name", t) at
// interesting points; it costs one branch unless a hook is installed for the current thread, which
// the parity tool does to compare against a fixture's inter_* tensors.
#include <functional>
#include <string>

#include <ATen/core/Tensor.h>

namespace omniflux {

using DebugHook = std::function<void(const std::string& name, const at::Tensor& value)>;

// Installs `hook` for the current thread for the scope's lifetime.
class DebugScope {
 public:
  explicit DebugScope(DebugHook hook);
  ~DebugScope();
  DebugScope(const DebugScope&) = delete;
  DebugScope& operator=(const DebugScope&) = delete;

 private:
  DebugHook previous_;
};

namespace detail {
extern thread_local DebugHook* current_debug_hook;
}

inline void tap(const std::string& name, const at::Tensor& value) {
  if (detail::current_debug_hook) (*detail::current_debug_hook)(name, value);
}
inline bool tapping() { return detail::current_debug_hook != nullptr; }

}  // namespace omniflux
