#pragma once
// omniflux-server's endpoints without the transport: one route table, handlers that take a parsed
// request and return a response, and the one place where exceptions become OpenAI error objects.
// http.cpp carries requests and responses over cpp-httplib; tests/test_server_routes.cpp drives
// the routes directly, without a socket.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "api.h"
#include "engine.h"
#include "jobs.h"
#include "multipart.h"
#include "options.h"

namespace omniflux::server {

extern const char* const kJsonType;  // "application/json; charset=utf-8"

struct HttpRequest {
  std::string method, path;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;             // the whole body of a JSON route
  std::vector<FormPart> form;   // the parts of a multipart route (MultipartParser, fed by the transport)
  // Polled while the request waits for its job: false once the client went away (the job is then
  // cancelled and nothing is sent).
  std::function<bool()> client_connected = [] { return true; };

  std::string header(const std::string& name) const;  // case-insensitive; "" when absent
  bool has_header(const std::string& name) const;
};

// A server-sent event stream: the transport calls next() until it reports the end, and abort()
// when the client went away.
class EventStream {
 public:
  virtual ~EventStream() = default;
  // Waits up to 100 ms for the next event and appends its wire text to `out` (nothing when no
  // event came; a comment after 10 s of silence keeps proxies open). True once the stream ended.
  virtual bool next(std::string& out) = 0;
  virtual void abort() = 0;
};

struct HttpResponse {
  int status = 200;  // 499 (nginx's "client closed request"): nothing is sent
  std::vector<std::pair<std::string, std::string>> headers;
  std::string content_type, body;
  std::shared_ptr<EventStream> stream;  // set: the body is this event stream (text/event-stream)
  bool close = false;                   // end the connection after this response

  // For the request log.
  std::string model, note;
  std::shared_ptr<Job> job;

  void set_header(const std::string& name, const std::string& value) { headers.emplace_back(name, value); }
  std::string header(const std::string& name) const;
};

// The error object for an ApiError (errors always close the connection: the request may not have
// been read to its end).
HttpResponse error_response(const ApiError& e);
// The one place that maps what a handler throws (ApiError, omniflux::Error, anything) to a response.
HttpResponse error_response(std::exception_ptr e);

class Router {
 public:
  enum class Body { None, Json, Multipart };

  // `stopping` is read by /health (503 while shutting down).
  Router(const ServerOptions& options, const Engine& engine, JobQueue& queue, const std::atomic<bool>& stopping,
         const Metrics& metrics);

  // What a path's route reads as its body; nullopt for no route.
  std::optional<Body> body_of(const std::string& path) const;
  // Everything decided from the head, before any body byte is read: origin, API key, method,
  // Content-Encoding, Content-Length, Content-Type. A response means refuse.
  std::optional<HttpResponse> precheck(const HttpRequest& head) const;
  // The parser a multipart route's body is fed through (limits from the options).
  MultipartParser form_parser(const HttpRequest& head) const;
  // Runs the request's route (precheck included); never throws.
  HttpResponse handle(HttpRequest& request) const;

  struct Route {
    const char* path;  // exact, or a prefix ending in '/' followed by one segment
    bool post;         // POST, else GET and HEAD
    Body body;
    HttpResponse (Router::*handler)(const HttpRequest&) const;
    bool prefix = false;
  };

 private:
  const Route* find(const std::string& path) const;
  HttpResponse page(const HttpRequest&) const;
  HttpResponse health(const HttpRequest&) const;
  HttpResponse metrics(const HttpRequest&) const;
  HttpResponse models(const HttpRequest&) const;
  HttpResponse model(const HttpRequest&) const;
  HttpResponse generations(const HttpRequest&) const;
  HttpResponse edits(const HttpRequest&) const;
  HttpResponse chat_completions(const HttpRequest&) const;
  HttpResponse images(const HttpRequest& req, ImageRequest r) const;
  HttpResponse chat(const HttpRequest& req, ChatRequest r) const;
  std::shared_ptr<Job> admit(Job::Fn fn) const;
  std::optional<JobEvent> wait(const HttpRequest& req, const std::shared_ptr<Job>& job,
                               const std::function<void(JobEvent&)>& on_event) const;

  const ServerOptions& opt_;
  const Engine& engine_;
  JobQueue& queue_;
  const std::atomic<bool>& stopping_;
  const Metrics& metrics_;
  std::vector<Route> routes_;
};

}  // namespace omniflux::server
