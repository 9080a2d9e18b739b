// cpp-httplib 0.11.4 (Debian's libcpp-httplib-dev) as omniflux-server uses it, and why:
//  - Each connection runs on a thread of the server's task queue (new_task_queue: a ThreadPool of
//    --http-threads); a handler may block there while its job waits or runs.
//  - 0.11.4 gives a handler no way to see its socket (Request::is_connection_closed came later),
//    and its own connection loop bounds neither the number of header lines nor the time a request
//    may take to arrive, nor a chunked body's size. So HttpServer::Impl::Server overrides the
//    (virtual) process_and_close_socket with its own keep-alive loop over a Connection stream:
//    per-request byte budgets (64 KiB of head, then --max-body-bytes of body), a deadline for the
//    whole request (--request-timeout), a wait limit per read (--read-timeout), and a peer check
//    that a waiting handler polls to cancel the job of a client that went away.
//  - The endpoints are not here: routes.cpp holds the route table and the handlers, which take a
//    parsed request and return a response. This file only carries them: the pre-routing handler
//    runs the routes' head checks before any body byte is read, so authentication, Content-Length,
//    Content-Type and Content-Encoding are refused without reading the body (and the connection is
//    then closed: its unread body would be taken for the next request); one catch-all handler per
//    method reads the body (multipart through MultipartParser) and calls Router::handle. Request bodies are decompressed by httplib when they carry Content-Encoding,
//    which would lift the body limit, so such requests are refused (415).
//  - Responses: JSON bodies are typed "application/json; charset=utf-8", which httplib's
//    compressor does not recognise, so multi-megabyte base64 PNGs are not brotli-compressed at
//    quality 11 on the connection thread; text/event-stream is never compressed by httplib.
//  - Streams use set_chunked_content_provider: httplib calls the provider until sink.done(), and
//    sink.is_writable() ends in our Connection::is_writable (peer check included).
#include "http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <random>

#include <httplib.h>

#include "omniflux/error.h"
#include "routes.h"

namespace omniflux::server {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int64_t kMaxHeadBytes = 64 * 1024;
constexpr int64_t kBodySlack = 64 * 1024;  // chunked framing, multipart boundaries

int ms_until(Clock::time_point t) {
  const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(d, INT32_MAX)));
}

// One client connection as httplib reads and writes it, with the limits described above.
class Connection final : public httplib::Stream {
 public:
  Connection(int fd, const ServerOptions& o, const std::atomic<bool>& stopping)
      : fd_(fd), read_ms_(o.read_timeout_s * 1000), write_ms_(o.write_timeout_s * 1000),
        request_ms_(o.request_timeout_s * 1000), head_ms_((o.head_timeout_s > 0 ? o.head_timeout_s : std::min(10, o.request_timeout_s)) * 1000), body_limit_(o.limits.max_body_bytes),
        buf_(16384), stopping_(stopping) {}

  // Waits for the first byte of the next request; false on idle timeout or stop.
  bool wait_request(int keep_alive_s) {
    if (off_ < len_) return true;
    const auto end = Clock::now() + std::chrono::seconds(keep_alive_s);
    while (!stopping_) {
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, std::min(100, ms_until(end)));
      if (r > 0) return true;  // data, or EOF/error, which the request line read then reports
      if (r < 0 && errno != EINTR) return false;
      if (Clock::now() >= end) return false;
    }
    return false;
  }

  // The head must arrive by one deadline (a client dribbling a header line every few seconds stays
  // under the per-read wait but not under this), the whole request by another.
  void begin_request() {
    used_ = 0;
    limit_ = kMaxHeadBytes;
    in_head_ = true;
    head_overflow_ = body_overflow_ = timed_out_ = false;
    start_ = Clock::now();
    deadline_ = start_ + std::chrono::milliseconds(std::min(head_ms_, request_ms_));
  }
  // The head is parsed: the body may use up to the body limit, until the request deadline.
  void head_done() {
    if (!in_head_) return;
    in_head_ = false;
    limit_ = used_ + body_limit_ + kBodySlack;
    deadline_ = start_ + std::chrono::milliseconds(request_ms_);
  }
  // Reading is over for this request (a handler that streams back must not be cut by the deadline).
  void reading_done() { deadline_ = Clock::time_point::max(); }

  bool head_overflow() const { return head_overflow_; }
  bool body_overflow() const { return body_overflow_; }
  bool timed_out() const { return timed_out_; }
  void close_after() { close_ = true; }
  bool close_requested() const { return close_; }

  // False once the client closed or reset its side. Unread bytes (a pipelined request) mean it is
  // still there. A client that half-closes after sending counts as gone.
  bool peer_open() const {
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    const int r = ::poll(&p, 1, 0);
    if (r < 0) return errno == EINTR;
    if (r == 0) return true;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL | POLLRDHUP)) return false;
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
  }

  bool is_readable() const override {
    if (off_ < len_) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, read_ms_) > 0;
  }

  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, write_ms_) > 0 && (p.revents & POLLOUT) && peer_open();
  }

  ssize_t read(char* ptr, size_t size) override {
    if (used_ >= limit_) {
      (in_head_ ? head_overflow_ : body_overflow_) = true;
      return -1;
    }
    size = std::min<size_t>(size, static_cast<size_t>(limit_ - used_));
    if (off_ == len_) {
      // Wait in slices, so a shutdown does not wait for a slow client's timeout.
      const auto end = std::min(Clock::now() + std::chrono::milliseconds(read_ms_), deadline_);
      int r = 0;
      while (!stopping_) {
        pollfd p{fd_, POLLIN, 0};
        r = ::poll(&p, 1, std::min(100, ms_until(end)));
        if (r > 0 || (r < 0 && errno != EINTR)) break;
        if (Clock::now() >= end) break;
      }
      if (r <= 0) {
        timed_out_ = r == 0 && !stopping_;
        return -1;
      }
      ssize_t n;
      do n = ::recv(fd_, buf_.data(), buf_.size(), 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      off_ = 0;
      len_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, len_ - off_);
    std::memcpy(ptr, buf_.data() + off_, n);
    off_ += n;
    used_ += static_cast<int64_t>(n);
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do n = ::send(fd_, ptr, size, MSG_NOSIGNAL);  // SO_SNDTIMEO (set by httplib) bounds a stall
    while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  void address(bool remote, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    auto* sa = reinterpret_cast<sockaddr*>(&a);
    if ((remote ? ::getpeername(fd_, sa, &len) : ::getsockname(fd_, sa, &len)) != 0) return;
    char host[INET6_ADDRSTRLEN] = {0};
    if (a.ss_family == AF_INET) {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
      port = ntohs(v4->sin_port);
    } else if (a.ss_family == AF_INET6) {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
      port = ntohs(v6->sin6_port);
    }
    ip = host;
  }

  int fd_;
  int read_ms_, write_ms_, request_ms_, head_ms_;
  Clock::time_point start_;
  int64_t body_limit_;
  std::vector<char> buf_;
  size_t off_ = 0, len_ = 0;
  int64_t used_ = 0, limit_ = kMaxHeadBytes;
  bool in_head_ = true, head_overflow_ = false, body_overflow_ = false, timed_out_ = false, close_ = false;
  Clock::time_point deadline_ = Clock::time_point::max();
  const std::atomic<bool>& stopping_;
};

// What the request log line says about the request being handled on this thread.
struct RequestNote {
  Clock::time_point start;
  std::string model;
  std::shared_ptr<Job> job;
  std::string extra;
};

thread_local Connection* t_conn = nullptr;
thread_local RequestNote t_note;

void mark_close(httplib::Response& res) {
  res.set_header("Connection", "close");
  if (t_conn) t_conn->close_after();
}

// The routes' view of a request head.
HttpRequest head_of(const httplib::Request& req) {
  HttpRequest r;
  r.method = req.method;
  r.path = req.path;
  r.headers.assign(req.headers.begin(), req.headers.end());
  return r;
}

// A response of the routes onto httplib's; streams become a chunked content provider that ends
// (and cancels the job) when the client stops reading.
void apply(const HttpResponse& from, httplib::Response& res) {
  res.status = from.status;
  for (const auto& [k, v] : from.headers) res.set_header(k.c_str(), v);
  if (from.close) mark_close(res);
  t_note.model = from.model;
  t_note.extra = from.note;
  t_note.job = from.job;
  if (!from.stream) {
    if (!from.content_type.empty()) res.set_content(from.body, from.content_type.c_str());
    return;
  }
  std::shared_ptr<EventStream> st = from.stream;
  res.set_chunked_content_provider(
      from.content_type,
      [st](size_t, httplib::DataSink& sink) {
        try {  // httplib does not catch what a provider throws
          std::string out;
          const bool last = st->next(out);
          if (out.empty() ? !sink.is_writable() : !sink.write(out.data(), out.size())) {
            st->abort();
            return false;
          }
          if (last) sink.done();
          return true;
        } catch (...) {
          st->abort();
          return false;
        }
      },
      [st](bool success) {
        if (!success) st->abort();
      });
}

}  // namespace

struct HttpServer::Impl {
  class Server final : public httplib::Server {
   public:
    explicit Server(const ServerOptions& o) : opt_(o) {}
    std::atomic<bool> stopping{false};
    // Stops accepting without httplib's stop(): that marks the server as shutting down, and
    // httplib then cuts every stream short before our final events (the error saying why, and
    // [DONE]) go out. Shutting the listening socket down makes accept() fail, so listen closes it
    // and returns once the connection threads are done; `stopping` ends idle keep-alive waits and
    // request reads. Works before listen has started too (accept then fails at once).
    void stop_now() {
      stopping = true;
      const socket_t s = svr_sock_.load();
      if (s != INVALID_SOCKET) ::shutdown(s, SHUT_RDWR);
    }

   private:
    // httplib's own loop, plus the limits of Connection, a stop check while idle, a close after
    // any error response, and a lingering close so a refused client still reads its answer.
    bool process_and_close_socket(socket_t sock) override {
      // One address may hold at most --max-connections-per-ip connection threads; a client that
      // opens more (slowly dribbling requests, say) is answered at once and cannot starve others.
      const std::string ip = peer_ip(sock);
      bool over = false;
      {
        std::lock_guard<std::mutex> lock(ip_m_);
        over = per_ip_[ip] >= opt_.max_connections_per_ip;
        if (!over) ++per_ip_[ip];
      }
      if (over) {
        refuse_connection(sock);  // outside the lock: refusals run in parallel
        return false;
      }
      struct Release {
        Server& s;
        const std::string& ip;
        ~Release() {
          std::lock_guard<std::mutex> lock(s.ip_m_);
          if (--s.per_ip_[ip] == 0) s.per_ip_.erase(ip);
        }
      } release{*this, ip};
      bool ret = false;
      {
        Connection conn(sock, opt_, stopping);
        t_conn = &conn;
        for (size_t count = keep_alive_max_count_; count > 0 && !stopping; --count) {
          if (!conn.wait_request(static_cast<int>(keep_alive_timeout_sec_))) break;
          conn.begin_request();
          t_note = RequestNote{};
          t_note.start = Clock::now();
          bool closed = false;
          // httplib catches what handlers throw, but not what escapes while it writes the response
          // or logs; that ends this connection, never the server.
          try {
            ret = process_request(conn, count == 1 || stopping, closed, nullptr);
          } catch (...) {
            ret = false;
          }
          t_note = RequestNote{};
          if (!ret || closed || conn.close_requested()) break;
        }
        t_conn = nullptr;
      }
      linger_close(sock);
      return ret;
    }

    static std::string peer_ip(socket_t sock) {
      sockaddr_storage a{};
      socklen_t len = sizeof a;
      if (::getpeername(sock, reinterpret_cast<sockaddr*>(&a), &len) != 0) return "?";
      char host[INET6_ADDRSTRLEN] = {0};
      if (a.ss_family == AF_INET) ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&a)->sin_addr, host, sizeof host);
      if (a.ss_family == AF_INET6) ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&a)->sin6_addr, host, sizeof host);
      return host;
    }

    // A 429 written straight to the socket, without reading the request (its head may still be on
    // its way); a short drain keeps the reset from destroying it in the common case, and the thread
    // is free again within 50 ms.
    void refuse_connection(socket_t sock) const {
      const std::string body =
          dump(ApiError(429, "too many connections from this address (" + std::to_string(opt_.max_connections_per_ip) +
                                 " open); reuse one or retry later",
                        "", "too_many_connections")
                   .body());
      const std::string r = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json; charset=utf-8\r\n"
                            "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
      (void)::send(sock, r.data(), r.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::shutdown(sock, SHUT_WR);
      char drain[4096];
      const auto end = Clock::now() + std::chrono::milliseconds(50);
      for (;;) {
        pollfd p{sock, POLLIN, 0};
        if (::poll(&p, 1, ms_until(end)) <= 0 || ::recv(sock, drain, sizeof drain, 0) <= 0) break;
      }
      ::close(sock);
    }

    std::mutex ip_m_;
    std::map<std::string, int> per_ip_;

    // Closing a socket whose receive buffer still holds bytes makes the kernel send a reset, and a
    // reset can destroy the response the client has not read yet (a 413 or 401 refused before a
    // large body was read). So, like nginx's lingering close: no more writes, then read and drop
    // what the client still sends until it closes, goes quiet for 2 s, sends more than a body may
    // hold, or 30 s pass.
    void linger_close(socket_t sock) const {
      ::shutdown(sock, SHUT_WR);
      char drain[16384];
      const auto end = Clock::now() + std::chrono::seconds(30);
      int64_t left = opt_.limits.max_body_bytes + kMaxHeadBytes + kBodySlack;
      while (left > 0 && !stopping) {
        pollfd p{sock, POLLIN, 0};
        if (::poll(&p, 1, std::min(2000, ms_until(end))) <= 0) break;
        const ssize_t n = ::recv(sock, drain, sizeof drain, 0);
        if (n <= 0) break;
        left -= n;
      }
      ::close(sock);
    }

   public:
    // httplib 0.11.4 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed in Debian's
    // build). A burst of clients then overflows the accept queue whenever the accepting thread is
    // briefly off the CPU: Linux drops the handshake, the client's SYN retries back off (1, 3, 7,
    // 15 s) past its connect timeout and the request fails with no HTTP status. listen() on a
    // listening socket only changes its backlog; waiting connections then wait for a thread.
    void widen_backlog(int backlog) {
      const socket_t s = svr_sock_.load();
      if (s != INVALID_SOCKET && ::listen(s, backlog) != 0)
        throw Error("cannot set the listen backlog", "listen()", std::to_string(backlog), std::strerror(errno));
    }

   private:
    const ServerOptions& opt_;
  };

  const ServerOptions& opt;
  Metrics& metrics;
  Server svr;
  Router router;
  std::mutex log_mutex;
  int port = -1;

  Impl(const ServerOptions& o, const Engine& e, JobQueue& q, Metrics& m)
      : opt(o), metrics(m), svr(o), router(o, e, q, svr.stopping, m) {}

  // httplib reads a multipart body through its own parser whenever the Content-Type says
  // multipart; the raw bytes are wanted (MultipartParser, fuzzed), so the pre-routing check moves
  // the header aside for the handler.
  static constexpr const char* kFormType = "X-Omniflux-Form-Content-Type";

  // The body of a POST route, read as it arrives: whole for JSON, through the multipart parser
  // (which refuses an oversized part or one image too many at once) for forms.
  void read_body(HttpRequest& r, const httplib::Request& req, const httplib::ContentReader& reader) {
    const bool form = router.body_of(r.path) == Router::Body::Multipart;
    if (form) r.headers.emplace_back("Content-Type", req.get_header_value(kFormType));
    std::optional<MultipartParser> parser;
    if (form) parser.emplace(router.form_parser(r));
    std::exception_ptr stop;
    const bool ok = reader([&](const char* data, size_t n) {
      try {
        if (parser) parser->feed(data, n);
        else r.body.append(data, n);
        return true;
      } catch (...) {
        stop = std::current_exception();
        return false;
      }
    });
    if (stop) std::rethrow_exception(stop);
    if (!ok) {
      if (t_conn && t_conn->body_overflow()) throw ApiError(413, "the body is larger than the limit", "", "body_too_large");
      if (t_conn && t_conn->timed_out()) throw ApiError(408, "the body did not arrive in time", "", "timeout");
      throw ApiError(400, form ? "malformed or truncated multipart/form-data body" : "the body could not be read",
                     "", form ? "invalid_multipart" : "invalid_request");
    }
    if (parser) r.form = parser->finish();
  }

  void dispatch(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader* reader) {
    HttpRequest r = head_of(req);
    HttpResponse out;
    try {
      if (reader) read_body(r, req, *reader);
      if (t_conn) t_conn->reading_done();  // a handler that waits or streams back is not cut by the deadline
      r.client_connected = [] { return !t_conn || t_conn->peer_open(); };
      out = router.handle(r);
    } catch (...) {
      out = error_response(std::current_exception());
    }
    apply(out, res);
  }

  // After the response went out (a stream to its end): the metrics, then the log line.
  void log(const httplib::Request& req, const httplib::Response& res) {
    const double s = std::chrono::duration<double>(Clock::now() - t_note.start).count();
    metrics.request(t_note.model, Metrics::endpoint_of(req.path), res.status, s);
    if (!opt.log_requests) return;
    char when[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::string line = std::string(when) + " " + req.remote_addr + ":" + std::to_string(req.remote_port) + " " +
                       req.method + " " + req.path + " " + std::to_string(res.status);
    char t[64];
    std::snprintf(t, sizeof t, " %.3fs", s);
    line += t;
    if (!t_note.model.empty()) line += " model=" + t_note.model;
    if (!t_note.extra.empty()) line += " " + t_note.extra;
    if (t_note.job) {
      std::snprintf(t, sizeof t, " queued=%.3fs run=%.3fs", t_note.job->queued_seconds(), t_note.job->run_seconds());
      line += t;
    }
    std::lock_guard<std::mutex> lock(log_mutex);
    std::fprintf(stderr, "%s\n", line.c_str());
  }

  // The routes' checks on the head, before any body byte is read.
  std::optional<HttpResponse> precheck(const httplib::Request& req) {
    if (t_conn) t_conn->head_done();
    std::optional<HttpResponse> refused = router.precheck(head_of(req));
    if (!refused && router.body_of(req.path) == Router::Body::Multipart) {
      auto& r = const_cast<httplib::Request&>(req);  // our own request object, see kFormType
      const std::string ct = r.get_header_value("Content-Type");
      r.headers.erase("Content-Type");
      r.headers.emplace(kFormType, ct);
    }
    return refused;
  }

  void setup() {
    const int threads = opt.http_threads > 0 ? opt.http_threads : static_cast<int>(opt.limits.max_queue) + 17;
    svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    svr.set_read_timeout(opt.read_timeout_s, 0);
    svr.set_write_timeout(opt.write_timeout_s, 0);
    svr.set_keep_alive_timeout(opt.keep_alive_timeout_s);
    svr.set_keep_alive_max_count(100);
    svr.set_payload_max_length(static_cast<size_t>(opt.limits.max_body_bytes));
    svr.set_tcp_nodelay(true);
    svr.set_default_headers({{"X-Content-Type-Options", "nosniff"}});

    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (auto refused = precheck(req)) {
        apply(*refused, res);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr.set_expect_100_continue_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (auto refused = precheck(req)) {
        apply(*refused, res);
        return refused->status;
      }
      return 100;
    });
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      apply(error_response(ep), res);
    });
    // httplib's own refusals (bad request line or headers, body read failures) come without a
    // body: give them the OpenAI error object. Every error response closes the connection, since
    // the request may not have been read to its end.
    svr.set_error_handler(httplib::Server::HandlerWithResponse(
        [](const httplib::Request& req, httplib::Response& res) {
          mark_close(res);
          if (!res.body.empty() || res.status == 499) return httplib::Server::HandlerResponse::Handled;
          ApiError e(res.status, "malformed request", "", "invalid_request");
          if (t_conn && t_conn->head_overflow()) e = ApiError(431, "the request head is larger than 64 KiB", "", "headers_too_large");
          else if (t_conn && t_conn->body_overflow()) e = ApiError(413, "the body is larger than the limit", "", "body_too_large");
          else if (t_conn && t_conn->timed_out()) e = ApiError(408, "the request did not arrive in time", "", "timeout");
          else if (res.status == 404) e = ApiError(404, "no such endpoint: " + req.method + " " + req.path, "", "not_found");
          else if (res.status == 414) e = ApiError(414, "the request target is longer than 8192 bytes", "", "uri_too_long");
          apply(error_response(e), res);
          return httplib::Server::HandlerResponse::Handled;
        }));
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) { log(req, res); });

    // One catch-all per method: the routes (routes.cpp) decide; the pre-routing check has already
    // refused unknown paths and wrong methods.
    svr.Get(".*", [this](const httplib::Request& req, httplib::Response& res) { dispatch(req, res, nullptr); });
    svr.Post(".*", [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      dispatch(req, res, &reader);
    });
  }
};

HttpServer::HttpServer(const ServerOptions& o, const Engine& e, JobQueue& q, Metrics& m)
    : impl_(std::make_unique<Impl>(o, e, q, m)) {
  impl_->setup();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const auto& o = impl_->opt;
  if (o.port == 0) {
    impl_->port = impl_->svr.bind_to_any_port(o.host);
    if (impl_->port < 0) throw Error("cannot bind", o.host + ":0", "a free port", std::strerror(errno));
  } else {
    if (!impl_->svr.bind_to_port(o.host, o.port))
      throw Error("cannot bind", o.host + ":" + std::to_string(o.port), "a free address", std::strerror(errno));
    impl_->port = o.port;
  }
  impl_->svr.widen_backlog(o.listen_backlog);
  return impl_->port;
}

void HttpServer::serve() { impl_->svr.listen_after_bind(); }

void HttpServer::stop() { impl_->svr.stop_now(); }

}  // namespace omniflux::server
