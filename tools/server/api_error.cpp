#include "api_error.h"

namespace omniflux::server {

using nlohmann::json;

namespace {
const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}
}  // namespace

ApiError::ApiError(int status_, std::string message_, std::string param_, std::string code_)
    : status(status_), message(std::move(message_)), type(error_type(status_)), param(std::move(param_)),
      code(std::move(code_)) {}

json ApiError::body() const {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}};
}

}  // namespace omniflux::server
