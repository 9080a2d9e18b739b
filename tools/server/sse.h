#pragma once
// Server-sent events (WHATWG HTML §9.2): each event is "field: value" lines ended by a blank line.
// JSON from nlohmann's dump() holds no raw newline, so one data line carries one payload.
#include <string>

#include <nlohmann/json.hpp>

namespace omniflux::server {

// "data: {...}\n\n", preceded by "event: NAME\n" when a name is given.
std::string sse_event(const nlohmann::json& data, const std::string& event = {});
// "data: [DONE]\n\n": the OpenAI stream terminator.
std::string sse_done();
// ": text\n\n": a comment line, which clients ignore; keeps idle proxies from closing the stream.
std::string sse_comment(const std::string& text);

}  // namespace omniflux::server
