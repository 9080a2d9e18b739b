#pragma once
// Shared by the server's unit tests (test_server_api.cpp, test_server_routes.cpp).
#include <gtest/gtest.h>

#include "api_error.h"

namespace omniflux::server {

// The ApiError a call throws (status and param), or a failure when it throws nothing.
template <class F>
ApiError error_of(F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no ApiError thrown";
  return ApiError(0, "");
}

}  // namespace omniflux::server
