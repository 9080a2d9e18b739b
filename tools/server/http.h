#pragma once
// The transport of omniflux-server on cpp-httplib: connections, limits on the request head and
// body, slow and abusive clients, the request log, and carrying the routes' (routes.h) requests
// and responses, server-sent events included.
#include <memory>

#include "engine.h"
#include "jobs.h"
#include "metrics.h"
#include "options.h"

namespace omniflux::server {

class HttpServer {
 public:
  // Every answered request is counted in `metrics`, which GET /metrics renders.
  HttpServer(const ServerOptions& options, const Engine& engine, JobQueue& queue, Metrics& metrics);
  ~HttpServer();

  // Binds host:port (port 0 picks a free one) and returns the port; throws omniflux::Error.
  int bind();
  // Serves until stop(); returns once every connection has ended.
  void serve();
  // From any thread (the signal thread): stops accepting and ends idle connections.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace omniflux::server
