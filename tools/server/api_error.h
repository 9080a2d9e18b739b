#pragma once
// The server's error: an HTTP status and OpenAI's error object. Apart from api.h so that the parts
// that need no engine (data_uri.h) and their fuzz target build without LibTorch.
#include <exception>
#include <string>

#include <nlohmann/json.hpp>

namespace omniflux::server {

// An API error: the HTTP status and OpenAI's {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::exception {
  int status = 400;
  std::string message, type, param, code;
  int retry_after = 0;  // seconds for a Retry-After header (429, 503); 0 = none
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
  const char* what() const noexcept override { return message.c_str(); }
  nlohmann::json body() const;
};

}  // namespace omniflux::server
