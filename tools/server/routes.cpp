#include "routes.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>

#include "omniflux/error.h"
#include "page_html.h"
#include "sse.h"

namespace omniflux::server {

const char* const kJsonType = "application/json; charset=utf-8";

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

bool same_name(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(prefix) + buf;
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

// Constant-time comparison of the presented key.
bool same_key(const std::string& given, const std::string& key) {
  if (key.empty()) return false;
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ key[i % key.size()]);
  return diff == 0;
}

HttpResponse json_response(const json& j, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.content_type = kJsonType;
  r.body = dump(j);
  return r;
}

ApiError failure(const JobEvent& end) {
  if (end.end == JobEvent::End::Failed && end.error) return *end.error;
  return ApiError(503, "the request was cancelled (the server is shutting down)", "", "cancelled");
}

// A client that left gets nothing; the log shows nginx's 499 (client closed request).
HttpResponse client_gone() {
  HttpResponse r;
  r.status = 499;
  r.close = true;
  return r;
}

// A job's events as server-sent events: `format` turns each into wire text (empty: nothing to
// send) and says when the stream is complete.
using Formatter = std::function<std::string(const JobEvent&, bool& last)>;
class JobStream final : public EventStream {
 public:
  JobStream(JobQueue& queue, std::shared_ptr<Job> job, std::string preamble, Formatter format)
      : queue_(queue), job_(std::move(job)), preamble_(std::move(preamble)), format_(std::move(format)) {}

  bool next(std::string& out) override {
    const size_t before = out.size();
    out += preamble_;
    preamble_.clear();
    bool last = false;
    if (auto e = job_->next(std::chrono::milliseconds(100))) out += format_(*e, last);
    else if (out.size() == before && Clock::now() - last_write_ >= std::chrono::seconds(10)) out += sse_comment("waiting");
    if (out.size() != before) last_write_ = Clock::now();
    return last;
  }
  void abort() override { queue_.cancel(job_); }

 private:
  JobQueue& queue_;
  std::shared_ptr<Job> job_;
  std::string preamble_;
  Formatter format_;
  Clock::time_point last_write_ = Clock::now();
};

HttpResponse event_stream(JobQueue& queue, const std::shared_ptr<Job>& job, std::string preamble, Formatter format) {
  HttpResponse r;
  r.content_type = "text/event-stream";
  r.set_header("Cache-Control", "no-cache");
  r.set_header("X-Accel-Buffering", "no");  // nginx: pass events through unbuffered
  r.stream = std::make_shared<JobStream>(queue, job, std::move(preamble), std::move(format));
  r.job = job;
  return r;
}

}  // namespace

std::string HttpRequest::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (same_name(k, name)) return v;
  return {};
}

bool HttpRequest::has_header(const std::string& name) const {
  for (const auto& kv : headers)
    if (same_name(kv.first, name)) return true;
  return false;
}

std::string HttpResponse::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (same_name(k, name)) return v;
  return {};
}

HttpResponse error_response(const ApiError& e) {
  HttpResponse r = json_response(e.body(), e.status);
  r.close = true;
  if (e.retry_after > 0) r.set_header("Retry-After", std::to_string(e.retry_after));
  return r;
}

HttpResponse error_response(std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const ApiError& e) {
    return error_response(e);
  } catch (const std::exception& e) {
    return error_response(ApiError(500, e.what(), "", "internal_error"));
  } catch (...) {
    return error_response(ApiError(500, "unknown error", "", "internal_error"));
  }
}

// ---- the route table ------------------------------------------------------------------------------

Router::Router(const ServerOptions& o, const Engine& e, JobQueue& q, const std::atomic<bool>& stopping,
               const Metrics& metrics)
    : opt_(o), engine_(e), queue_(q), stopping_(stopping), metrics_(metrics),
      routes_{{"/", false, Body::None, &Router::page},
              {"/health", false, Body::None, &Router::health},
              {"/metrics", false, Body::None, &Router::metrics},
              {"/v1/models", false, Body::None, &Router::models},
              {"/v1/models/", false, Body::None, &Router::model, true},
              {"/v1/images/generations", true, Body::Json, &Router::generations},
              {"/v1/images/edits", true, Body::Multipart, &Router::edits},
              {"/v1/chat/completions", true, Body::Json, &Router::chat_completions}} {}

const Router::Route* Router::find(const std::string& path) const {
  for (const Route& r : routes_) {
    if (r.handler == &Router::metrics && !opt_.metrics) continue;
    if (!r.prefix && path == r.path) return &r;
    const size_t n = std::strlen(r.path);
    if (r.prefix && path.size() > n && starts_with(path, r.path) && path.find('/', n) == std::string::npos) return &r;
  }
  return nullptr;
}

std::optional<Router::Body> Router::body_of(const std::string& path) const {
  const Route* r = find(path);
  if (!r) return std::nullopt;
  return r->body;
}

std::optional<HttpResponse> Router::precheck(const HttpRequest& req) const {
  // Browsers send Origin with every POST: a page of another site may not use the API through a
  // visitor's browser (cross-site request forgery against a loopback server). There is no CORS.
  if (starts_with(req.path, "/v1/") && req.has_header("Origin")) {
    std::string origin = req.header("Origin");
    for (const char* scheme : {"http://", "https://"})
      if (starts_with(origin, scheme)) origin = origin.substr(std::strlen(scheme));
    if (origin != req.header("Host"))
      return error_response(
          ApiError(403, "cross-origin requests are refused (Origin " + req.header("Origin") + ")", "", "cross_origin"));
  }
  // /v1 wants --api-key; /metrics wants --metrics-key (scrapers are configured apart from clients).
  const std::string key = starts_with(req.path, "/v1/") ? opt_.api_key : req.path == "/metrics" ? opt_.metrics_key : "";
  if (!key.empty()) {
    const std::string auth = req.header("Authorization");
    if (!starts_with(auth, "Bearer ") || !same_key(auth.substr(7), key)) {
      HttpResponse r = error_response(ApiError(
          401, auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key", "", "invalid_api_key"));
      r.set_header("WWW-Authenticate", "Bearer");
      return r;
    }
  }
  const Route* route = find(req.path);
  if (!route)
    return error_response(ApiError(404, "no such endpoint: " + req.method + " " + req.path, "", "not_found"));
  const bool post = route->post;
  if ((post && req.method != "POST") || (!post && req.method != "GET" && req.method != "HEAD")) {
    HttpResponse r = error_response(ApiError(
        405, req.method + " is not allowed on " + req.path + " (use " + (post ? "POST" : "GET") + ")", "", "method_not_allowed"));
    r.set_header("Allow", post ? "POST" : "GET, HEAD");
    return r;
  }
  if (!post) return std::nullopt;
  const std::string enc = req.header("Content-Encoding");
  if (!enc.empty() && enc != "identity")
    return error_response(ApiError(415, "compressed request bodies (Content-Encoding: " + enc + ") are not accepted", "",
                                   "unsupported_encoding"));
  if (req.has_header("Content-Length")) {
    const std::string cl = req.header("Content-Length");
    const bool digits = !cl.empty() && cl.size() <= 18 && cl.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) return error_response(ApiError(400, "malformed Content-Length", "", "invalid_request"));
    if (std::stoll(cl) > opt_.limits.max_body_bytes)
      return error_response(ApiError(
          413, "the body is " + cl + " bytes, more than the limit of " + std::to_string(opt_.limits.max_body_bytes), "",
          "body_too_large"));
  }
  const std::string ct = req.header("Content-Type");
  auto media = ct.substr(0, ct.find(';'));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  for (auto& c : media) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const char* want = route->body == Body::Multipart ? "multipart/form-data" : "application/json";
  if (media != want)
    return error_response(ApiError(415, std::string("Content-Type must be ") + want + (ct.empty() ? "" : ", got " + ct), "",
                                   "unsupported_media_type"));
  return std::nullopt;
}

MultipartParser Router::form_parser(const HttpRequest& head) const {
  FormLimits f;
  f.max_images = opt_.limits.max_images;
  f.max_image_bytes = opt_.limits.max_image_bytes;
  f.max_field_bytes = std::max<int64_t>(opt_.limits.max_prompt_bytes, 256);
  return MultipartParser(multipart_boundary(head.header("Content-Type")), f);
}

HttpResponse Router::handle(HttpRequest& req) const {
  try {
    if (auto refused = precheck(req)) return *refused;
    return (this->*find(req.path)->handler)(req);
  } catch (...) {
    return error_response(std::current_exception());
  }
}

// ---- jobs -----------------------------------------------------------------------------------------

std::shared_ptr<Job> Router::admit(Job::Fn fn) const {
  auto job = std::make_shared<Job>(std::move(fn));
  switch (queue_.submit(job)) {
    case JobQueue::Admit::Accepted: return job;
    case JobQueue::Admit::Full: {
      ApiError e(429, "the queue is full (" + std::to_string(queue_.max_waiting()) + " waiting); retry later", "", "queue_full");
      e.retry_after = queue_.retry_after_seconds();
      throw e;
    }
    case JobQueue::Admit::Closed: break;
  }
  throw ApiError(503, "the server is shutting down", "", "shutting_down");
}

// Waits for a job while its client waits for the answer; cancels it when the client goes away
// (nullopt then: nothing can be sent).
std::optional<JobEvent> Router::wait(const HttpRequest& req, const std::shared_ptr<Job>& job,
                                     const std::function<void(JobEvent&)>& on_event) const {
  auto last_check = Clock::now();
  for (;;) {
    auto e = job->next(std::chrono::milliseconds(50));
    if (e && e->kind == JobEvent::Kind::Finished) return e;
    if (e) on_event(*e);
    if (Clock::now() - last_check >= std::chrono::milliseconds(50)) {
      last_check = Clock::now();
      if (!req.client_connected()) {
        queue_.cancel(job);
        return std::nullopt;
      }
    }
  }
}

// ---- handlers -------------------------------------------------------------------------------------

HttpResponse Router::page(const HttpRequest&) const {
  HttpResponse r;
  r.set_header("Content-Security-Policy",
               "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
               "script-src 'unsafe-inline'; connect-src 'self'");
  r.content_type = "text/html; charset=utf-8";
  r.body = kPageHtml;
  return r;
}

HttpResponse Router::health(const HttpRequest&) const {
  const auto s = queue_.stats();
  json models = json::array();
  for (const auto& m : engine_.catalog().models) models.push_back(model_name(m.id));
  const bool stopping = stopping_.load();
  return json_response({{"status", stopping ? "shutting_down" : "ok"},
                        {"models", models},
                        {"queue", {{"running", s.running ? 1 : 0}, {"waiting", s.waiting},
                                   {"max_waiting", queue_.max_waiting()}, {"completed", s.completed}}}},
                       stopping ? 503 : 200);
}

HttpResponse Router::metrics(const HttpRequest&) const {
  const auto s = queue_.stats();
  Metrics::Gauges g;
  g.waiting = static_cast<int64_t>(s.waiting);
  g.running = s.running ? 1 : 0;
  g.rss_bytes = Metrics::process_rss_bytes();
  engine_.memory_gauges(g);
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";  // the Prometheus text format
  r.body = metrics_.render(g);
  return r;
}

HttpResponse Router::models(const HttpRequest&) const { return json_response(models_response(engine_.catalog())); }

HttpResponse Router::model(const HttpRequest& req) const {
  const std::string id = req.path.substr(std::strlen("/v1/models/"));
  const ModelCaps* m = engine_.catalog().find(id);
  if (!m) throw ApiError(404, "model '" + id + "' is not served here", "model", "model_not_found");
  return json_response(model_object(*m, engine_.catalog().created));
}

HttpResponse Router::generations(const HttpRequest& req) const {
  return images(req, parse_image_generation(parse_json_body(req.body), engine_.catalog(), opt_.limits));
}

HttpResponse Router::edits(const HttpRequest& req) const {
  return images(req, parse_image_edit(req.form, engine_.catalog(), opt_.limits));
}

HttpResponse Router::chat_completions(const HttpRequest& req) const {
  return chat(req, parse_chat(parse_json_body(req.body), engine_.catalog(), opt_.limits));
}

HttpResponse Router::images(const HttpRequest& req, ImageRequest r) const {
  const std::string model = model_name(r.model);
  const std::string note = "n=" + std::to_string(r.n) + " size=" + std::to_string(r.width) + "x" + std::to_string(r.height);
  const int64_t n = r.n;
  const bool streamed = r.stream;
  const std::string prefix = r.edit ? "image_edit" : "image_generation";
  engine_.check_fits(r);  // before it queues: a request that cannot fit is refused, not run
  auto shared = std::make_shared<ImageRequest>(std::move(r));
  const Engine* eng = &engine_;
  auto job = admit([eng, shared](Job& j) { eng->run_images(*shared, j); });
  const int64_t created = unix_now();
  HttpResponse res;
  if (!streamed) {
    std::vector<GeneratedImage> out(static_cast<size_t>(n));
    auto end = wait(req, job, [&](JobEvent& e) {
      if (e.kind == JobEvent::Kind::Image) out.at(static_cast<size_t>(e.index)) = std::move(e.image);
    });
    if (!end) res = client_gone();
    else if (end->end != JobEvent::End::Ok) res = error_response(failure(*end));
    else res = json_response(images_response(out, created, end->usage));
  } else {
    res = event_stream(queue_, job, "", [prefix, created](const JobEvent& e, bool& last) -> std::string {
      switch (e.kind) {
        case JobEvent::Kind::Progress:
          return sse_event(image_progress_event(prefix, e.index, e.stage, e.step, e.total), prefix + ".progress");
        case JobEvent::Kind::Image:
          return sse_event(image_completed_event(prefix, e.index, e.image, created), prefix + ".completed");
        case JobEvent::Kind::Text: return {};
        case JobEvent::Kind::Finished:
          last = true;
          if (e.end == JobEvent::End::Ok) return sse_done();
          {
            json err = failure(e).body();
            err["type"] = "error";
            return sse_event(err, "error") + sse_done();
          }
      }
      return {};
    });
  }
  res.model = model;
  res.note = note;
  res.job = job;
  return res;
}

HttpResponse Router::chat(const HttpRequest& req, ChatRequest r) const {
  const std::string model = model_name(r.model);
  const std::string note = "messages=" + std::to_string(r.turns.size()) + " images=" + std::to_string(r.images) +
                           " n=" + std::to_string(r.n) + " max_tokens=" + std::to_string(r.options.max_new_tokens);
  const bool streamed = r.stream, usage = r.include_usage;
  const int64_t n = r.n;
  engine_.check_fits(r);
  auto shared = std::make_shared<ChatRequest>(std::move(r));
  const Engine* eng = &engine_;
  auto job = admit([eng, shared](Job& j) { eng->run_chat(*shared, j); });
  const std::string id = random_id("chatcmpl-");
  const int64_t created = unix_now();
  HttpResponse res;
  if (!streamed) {
    auto end = wait(req, job, [](JobEvent&) {});
    if (!end) res = client_gone();
    else if (end->end != JobEvent::End::Ok) res = error_response(failure(*end));
    else res = json_response(chat_response(id, model, created, end->chat));
  } else {
    std::string first;
    for (int64_t i = 0; i < n; ++i)
      first += sse_event(chat_chunk(id, model, created, i, {{"role", "assistant"}, {"content", ""}}, nullptr, usage));
    res = event_stream(queue_, job, first, [id, model, created, usage](const JobEvent& e, bool& last) -> std::string {
      switch (e.kind) {
        case JobEvent::Kind::Text:
          return sse_event(chat_chunk(id, model, created, e.index, {{"content", e.text}}, nullptr, usage));
        case JobEvent::Kind::Progress:
        case JobEvent::Kind::Image: return {};
        case JobEvent::Kind::Finished: {
          last = true;
          if (e.end != JobEvent::End::Ok) return sse_event(failure(e).body()) + sse_done();
          std::string out;
          for (size_t i = 0; i < e.chat.choices.size(); ++i)
            out += sse_event(chat_chunk(id, model, created, static_cast<int64_t>(i), json::object(),
                                        e.chat.choices[i].finish_reason.c_str(), usage));
          if (usage) out += sse_event(chat_usage_chunk(id, model, created, e.chat));
          return out + sse_done();
        }
      }
      return {};
    });
  }
  res.model = model;
  res.note = note;
  res.job = job;
  return res;
}

}  // namespace omniflux::server
