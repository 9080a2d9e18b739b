#include "sse.h"

#include "api.h"

namespace omniflux::server {

std::string sse_event(const nlohmann::json& data, const std::string& event) {
  std::string out;
  if (!event.empty()) out += "event: " + event + "\n";
  out += "data: " + dump(data) + "\n\n";
  return out;
}

std::string sse_done() { return "data: [DONE]\n\n"; }

std::string sse_comment(const std::string& text) {
  std::string t = text;
  for (char& c : t)
    if (c == '\n' || c == '\r') c = ' ';
  return ": " + t + "\n\n";
}

}  // namespace omniflux::server
