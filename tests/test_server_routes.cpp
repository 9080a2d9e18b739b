// omniflux-server's routes without a socket (tools/server/routes.h): the multipart parser (fed
// whole or in any pieces alike, limits refused as soon as they are broken), and the route table
// driven directly with parsed requests on the tiny models: head checks, errors as OpenAI error
// objects, a generation, a streamed generation, a 2-image edit, a client that went away, a full
// queue. tests/test_server_http.cpp checks the same over real HTTP.
#include <gtest/gtest.h>

#include <strings.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "data_uri.h"
#include "engine.h"
#include "jobs.h"
#include "multipart.h"
#include "omniflux/io/image.h"
#include "routes.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace omniflux;
using namespace omniflux::server;

namespace {

std::string part(const std::string& name, const std::string& value, const std::string& filename = "",
                 const std::string& boundary = "XyZ") {
  return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"" +
         (filename.empty() ? "" : "; filename=\"" + filename + "\"") + "\r\n\r\n" + value + "\r\n";
}

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

std::vector<FormPart> parse_in_pieces(const std::string& body, size_t piece, const FormLimits& limits = {}) {
  MultipartParser p("XyZ", limits);
  for (size_t i = 0; i < body.size(); i += piece) p.feed(body.data() + i, std::min(piece, body.size() - i));
  return p.finish();
}

}  // namespace

TEST(ServerMultipart, PartsNamesFilenamesAndTypes) {
  const std::string body = "preamble to ignore\r\n" + part("prompt", "make it \"snow\"") +
                           "--XyZ  \r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"a \\\"b\\\".png\"\r\n"
                           "content-type: image/png\r\nX-Other: ignored\r\n\r\n\x89PNG--XyZ\r\n--XyY\r\n"
                           "--XyZ\r\nContent-Disposition: form-data; name=size\r\n\r\n\r\n--XyZ--\r\nepilogue";
  const auto parts = parse_multipart(body, "multipart/form-data; charset=utf-8; boundary=\"XyZ\"", {});
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].name, "prompt");
  EXPECT_EQ(parts[0].data, "make it \"snow\"");
  EXPECT_EQ(parts[1].name, "image[]");
  EXPECT_EQ(parts[1].filename, "a \"b\".png");
  EXPECT_EQ(parts[1].content_type, "image/png");
  EXPECT_EQ(parts[1].data, "\x89PNG--XyZ\r\n--XyY");  // no delimiter: one needs CRLF before and the exact boundary
  EXPECT_EQ(parts[2].name, "size");
  EXPECT_EQ(parts[2].data, "");
}

TEST(ServerMultipart, AnySplitOfTheBodyGivesTheSameParts) {
  std::string body;
  body += part("model", "uniworld-v1");
  const std::string tricky = "\r\n--Xy\r\n--X\r\r\n-" + std::string(300, 'a') + "\r\n--XyY\r\n--Xy";
  body += part("image[]", tricky, "a.png");
  body += part("prompt", std::string(1000, 'p'));
  body += "--XyZ--\r\n";
  const auto whole = parse_in_pieces(body, body.size());
  ASSERT_EQ(whole.size(), 3u);
  EXPECT_EQ(whole[1].data, tricky);
  for (size_t piece : {1, 2, 3, 5, 7, 13, 64, 1000}) {
    const auto parts = parse_in_pieces(body, piece);
    ASSERT_EQ(parts.size(), whole.size()) << "pieces of " << piece;
    for (size_t i = 0; i < parts.size(); ++i) {
      EXPECT_EQ(parts[i].name, whole[i].name) << "pieces of " << piece;
      EXPECT_EQ(parts[i].data, whole[i].data) << "pieces of " << piece;
      EXPECT_EQ(parts[i].filename, whole[i].filename) << "pieces of " << piece;
    }
  }
}

TEST(ServerMultipart, LimitsAreRefusedAsSoonAsTheyAreBroken) {
  FormLimits lim;
  lim.max_images = 2;
  lim.max_image_bytes = 100;
  lim.max_field_bytes = 50;
  // The third image is refused at its head, before its data or the end of the body arrives.
  {
    MultipartParser p("XyZ", lim);
    const std::string two = part("image", "a") + part("image[]", "b");
    p.feed(two.data(), two.size());
    const std::string third = "--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"\r\n\r\n";
    const ApiError e = error_of([&] { p.feed(third.data(), third.size()); });
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "image");
    EXPECT_EQ(e.code, "limit_exceeded");
  }
  // An oversized image part: 413 naming it, while its bytes are still arriving.
  {
    MultipartParser p("XyZ", lim);
    const std::string head = part("prompt", "p") + "--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"\r\n\r\n";
    p.feed(head.data(), head.size());
    const std::string chunk(60, 'x');
    p.feed(chunk.data(), chunk.size());
    const ApiError e = error_of([&] { p.feed(chunk.data(), chunk.size()); });
    EXPECT_EQ(e.status, 413);
    EXPECT_EQ(e.param, "image[0]");
    EXPECT_EQ(e.code, "image_too_large");
  }
  EXPECT_EQ(error_of([&] { parse_in_pieces(part("prompt", std::string(51, 'p')) + "--XyZ--", 7, lim); }).code,
            "prompt_too_long");
  {
    std::string many;
    for (int i = 0; i < 65; ++i) many += part("f" + std::to_string(i), "v");
    EXPECT_EQ(error_of([&] { parse_in_pieces(many + "--XyZ--", 4096); }).message, "more than 64 form fields");
  }
  // Syntax: truncation, no name, not form-data, an unterminated quote, a boundary without CRLF,
  // a head that never ends, no opening boundary at all.
  const std::vector<std::string> bad = {
      part("prompt", "p") + "--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"\r\n\r\nabc",
      "--XyZ\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XyZ--",
      "--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--XyZ--",
      "--XyZ\r\nContent-Disposition: form-data; name=\"a\r\n\r\nv\r\n--XyZ--",
      "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--XyZx\r\n--XyZ--",
      "--XyZ\r\nContent-Disposition: form-data; name=a\r\n" + std::string(20000, 'h'),
      std::string(20000, 'x'),
      "",
  };
  for (const auto& b : bad) {
    const ApiError e = error_of([&] { parse_in_pieces(b, 5); });
    EXPECT_EQ(e.status, 400) << b.substr(0, 80);
    EXPECT_EQ(e.code, "invalid_multipart") << b.substr(0, 80);
  }
}

TEST(ServerMultipart, Boundaries) {
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=abc"), "abc");
  EXPECT_EQ(multipart_boundary("multipart/form-data;BOUNDARY=\"a b:c\" ; charset=x"), "a b:c");
  for (const char* ct : {"multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=\"abc",
                         "multipart/form-data; boundary=a{b}", "multipart/form-data; boundary=\"ab \""})
    EXPECT_EQ(error_of([&] { multipart_boundary(ct); }).code, "invalid_multipart") << ct;
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=" + std::string(70, 'b')), std::string(70, 'b'));
  EXPECT_EQ(error_of([&] { multipart_boundary("multipart/form-data; boundary=" + std::string(71, 'b')); }).status, 400);
}

// ---- the routes on the tiny models, without a socket ------------------------------------------------

namespace {

class ServerRoutes : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const fs::path d = tiny_folders(5, {"flux_1_dev", "uniworld_v1", "siglip2", "x_omni"});
    opt_ = new ServerOptions(parse_server_args(
        {"--uniworld", (d / "uniworld-v1").string(), "--flux", (d / "flux.1-dev").string(), "--siglip",
         (d / "siglip2").string(), "--xomni", (d / "x-omni").string(), "--serve-flux", "--threads", "2",
         "--max-queue", "1", "--api-key", "sekret"},
        nullptr));
    engine_ = Engine::load(*opt_, [](const std::string&) {}).release();
    metrics_ = new Metrics;
    queue_ = new JobQueue(opt_->limits.max_queue, metrics_);
    worker_ = new std::thread([] { queue_->run(); });
  }
  static void TearDownTestSuite() {
    queue_->shutdown();
    worker_->join();
    delete worker_;
    delete queue_;
    delete engine_;
    delete metrics_;
    delete opt_;
  }

  static HttpRequest request(const std::string& method, const std::string& path, const std::string& body = "",
                             const std::string& type = "application/json") {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.headers = {{"Host", "localhost:1"}, {"authorization", "Bearer sekret"}};
    if (method == "POST") r.headers.emplace_back("Content-Type", type);
    r.body = body;
    return r;
  }

  static json body_of(const HttpResponse& r) { return json::parse(r.body); }

  // A job that holds the worker until released (so requests behind it wait, deterministically).
  struct Blocker {
    std::atomic<bool> release{false}, started{false};
    std::shared_ptr<Job> job = std::make_shared<Job>([this](Job&) {
      started = true;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
    explicit Blocker(bool wait_started) {
      EXPECT_EQ(queue_->submit(job), JobQueue::Admit::Accepted);
      while (wait_started && !started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ~Blocker() {
      release = true;
      while (job->next(std::chrono::milliseconds(100))) {
      }
    }
  };

  static inline ServerOptions* opt_ = nullptr;
  static inline Engine* engine_ = nullptr;
  static inline JobQueue* queue_ = nullptr;
  static inline Metrics* metrics_ = nullptr;
  static inline std::thread* worker_ = nullptr;
  std::atomic<bool> stopping_{false};
  Router router_{*opt_, *engine_, *queue_, stopping_, *metrics_};
};

}  // namespace

TEST_F(ServerRoutes, HeadChecksAndErrorObjects) {
  HttpRequest r = request("GET", "/health");
  HttpResponse h = router_.handle(r);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(body_of(h)["status"], "ok");
  EXPECT_FALSE(h.close);
  stopping_ = true;
  EXPECT_EQ(router_.handle(r).status, 503);
  stopping_ = false;

  struct Case {
    HttpRequest req;
    int status;
    std::string code, header;
  };
  auto with = [](HttpRequest r, const std::string& k, const std::string& v) {
    for (auto it = r.headers.begin(); it != r.headers.end();)
      it = strcasecmp(it->first.c_str(), k.c_str()) == 0 ? r.headers.erase(it) : it + 1;
    if (!v.empty()) r.headers.emplace_back(k, v);
    return r;
  };
  const std::vector<Case> cases = {
      {request("GET", "/v2/none"), 404, "not_found", ""},
      {request("DELETE", "/v1/models"), 405, "method_not_allowed", "Allow"},
      {request("GET", "/v1/chat/completions"), 405, "method_not_allowed", "Allow"},
      {with(request("GET", "/v1/models"), "Authorization", ""), 401, "invalid_api_key", "WWW-Authenticate"},
      {with(request("GET", "/v1/models"), "Authorization", "Bearer wrong"), 401, "invalid_api_key", "WWW-Authenticate"},
      {with(request("POST", "/v1/chat/completions", "{}"), "Origin", "http://evil.example"), 403, "cross_origin", ""},
      {request("POST", "/v1/chat/completions", "{}", "text/plain"), 415, "unsupported_media_type", ""},
      {request("POST", "/v1/images/edits", "{}"), 415, "unsupported_media_type", ""},
      {with(request("POST", "/v1/chat/completions", "{}"), "Content-Encoding", "gzip"), 415, "unsupported_encoding", ""},
      {with(request("POST", "/v1/chat/completions", "{}"), "Content-Length", "999999999999"), 413, "body_too_large", ""},
      {with(request("POST", "/v1/chat/completions", "{}"), "Content-Length", "12x"), 400, "invalid_request", ""},
      {request("POST", "/v1/chat/completions", "{\"model\": "), 400, "", ""},
      {request("GET", "/v1/models/dall-e-3"), 404, "model_not_found", ""},
  };
  for (auto c : cases) {
    const HttpResponse res = router_.handle(c.req);
    EXPECT_EQ(res.status, c.status) << c.req.method << " " << c.req.path << " " << res.body;
    EXPECT_TRUE(res.close) << c.req.path;
    const json e = body_of(res);
    ASSERT_TRUE(e.contains("error")) << res.body;
    if (!c.code.empty()) EXPECT_EQ(e["error"]["code"], c.code) << c.req.path;
    if (!c.header.empty()) EXPECT_FALSE(res.header(c.header).empty()) << c.req.path << " " << c.header;
  }
  // the precheck alone answers the same, before a body exists
  EXPECT_EQ(router_.precheck(request("POST", "/v1/chat/completions", "", "text/plain"))->status, 415);
  EXPECT_FALSE(router_.precheck(request("POST", "/v1/chat/completions")).has_value());
  EXPECT_EQ(router_.body_of("/v1/images/edits"), Router::Body::Multipart);
  EXPECT_EQ(router_.body_of("/v1/models/x-omni"), Router::Body::None);
  EXPECT_FALSE(router_.body_of("/v1/models/a/b").has_value());
  HttpRequest m = request("GET", "/v1/models/x-omni");
  EXPECT_EQ(body_of(router_.handle(m))["id"], "x-omni");
}

TEST_F(ServerRoutes, GenerationStreamEditAndAClientThatLeft) {
  // a plain generation: the PNG decodes at the asked size
  HttpRequest g = request("POST", "/v1/images/generations",
                          R"({"model":"flux.1-dev","prompt":"a red cube","size":"64x64","steps":2,"seed":3})");
  const HttpResponse res = router_.handle(g);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.model, "flux.1-dev");
  ASSERT_TRUE(res.job);
  const std::string png = *base64_decode(body_of(res)["data"][0]["b64_json"].get<std::string>());
  const auto size = image_size(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "response");
  EXPECT_EQ(size.first, 64);
  EXPECT_EQ(size.second, 64);

  // the same request streamed: progress, then the same image, then [DONE]
  HttpRequest s = request("POST", "/v1/images/generations",
                          R"({"model":"flux.1-dev","prompt":"a red cube","size":"64x64","steps":2,"seed":3,"stream":true})");
  const HttpResponse sr = router_.handle(s);
  ASSERT_EQ(sr.status, 200) << sr.body;
  ASSERT_TRUE(sr.stream);
  EXPECT_EQ(sr.content_type, "text/event-stream");
  std::string text;
  const auto t0 = std::chrono::steady_clock::now();
  while (!sr.stream->next(text)) ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(120));
  EXPECT_NE(text.find("event: image_generation.progress"), std::string::npos);
  EXPECT_NE(text.find("event: image_generation.completed"), std::string::npos);
  EXPECT_NE(text.find(body_of(res)["data"][0]["b64_json"].get<std::string>()), std::string::npos)
      << "the streamed image differs from the plain one";
  EXPECT_EQ(text.substr(text.size() - 14), "data: [DONE]\n\n");

  // a 2-image edit from parsed form parts
  const std::string a = [] {
    auto v = encode_png(gradient_image(40, 30, 0));
    return std::string(v.begin(), v.end());
  }();
  HttpRequest e = request("POST", "/v1/images/edits", "", "multipart/form-data; boundary=XyZ");
  e.form = parse_multipart(part("model", "uniworld-v1") + part("prompt", "make it snow") + part("size", "64x64") +
                               part("steps", "2") + part("image[]", a, "a.png") + part("image[]", a, "b.png") + "--XyZ--",
                           "multipart/form-data; boundary=XyZ", {});
  const HttpResponse er = router_.handle(e);
  ASSERT_EQ(er.status, 200) << er.body;
  EXPECT_EQ(body_of(er)["data"].size(), 1u);
  EXPECT_EQ(er.model, "uniworld-v1");

  // a client that went away while its job waited: nothing is sent (499) and the job is cancelled
  Blocker busy(true);
  HttpRequest gone = g;
  gone.client_connected = [] { return false; };
  const HttpResponse gr = router_.handle(gone);
  EXPECT_EQ(gr.status, 499);
  EXPECT_TRUE(gr.body.empty());
  ASSERT_TRUE(gr.job);
  EXPECT_TRUE(gr.job->cancelled());
}

TEST_F(ServerRoutes, AFullQueueAnswers429WithRetryAfter) {
  // --max-queue 1: one job runs, one waits, the next request finds no room.
  Blocker running(true), waiting(false);
  HttpRequest g = request("POST", "/v1/images/generations", R"({"model":"flux.1-dev","prompt":"p","size":"64x64"})");
  const HttpResponse r = router_.handle(g);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(body_of(r)["error"]["code"], "queue_full");
  EXPECT_GE(std::stoi(r.header("Retry-After")), 1);
}

// ---- metrics ----------------------------------------------------------------------------------------

TEST(ServerMetrics, PrometheusTextFormat) {
  Metrics m;
  m.request("x-omni", "/v1/chat/completions", 200, 0.02);
  m.request("x-omni", "/v1/chat/completions", 200, 3.0);
  m.request("", "/v1/models", 401, 0.001);
  m.request("we\"ird\\\n", "other", 404, 0.5);
  m.add_steps(28);
  m.add_tokens(5);
  m.add_images(2);
  m.job_ended(true, false);
  m.job_ended(false, true);
  m.queue_wait(0.3);
  Metrics::Gauges g;
  g.waiting = 3;
  g.running = 1;
  g.rss_bytes = 12345;
  const std::string t = m.render(g);
  auto has = [&](const std::string& line) { return t.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("# TYPE omniflux_requests_total counter"));
  EXPECT_TRUE(has(R"(omniflux_requests_total{model="x-omni",endpoint="/v1/chat/completions",status="200"} 2)"));
  EXPECT_TRUE(has(R"(omniflux_requests_total{model="",endpoint="/v1/models",status="401"} 1)"));
  EXPECT_TRUE(has(R"(omniflux_requests_total{model="we\"ird\\\n",endpoint="other",status="404"} 1)")) << t;
  // cumulative buckets: 0.02 falls in le=0.025, 3.0 in le=5
  const std::string l = R"(model="x-omni",endpoint="/v1/chat/completions",)";
  EXPECT_TRUE(has("omniflux_request_duration_seconds_bucket{" + l + R"(le="0.01"} 0)"));
  EXPECT_TRUE(has("omniflux_request_duration_seconds_bucket{" + l + R"(le="0.025"} 1)"));
  EXPECT_TRUE(has("omniflux_request_duration_seconds_bucket{" + l + R"(le="2.5"} 1)"));
  EXPECT_TRUE(has("omniflux_request_duration_seconds_bucket{" + l + R"(le="5"} 2)"));
  EXPECT_TRUE(has("omniflux_request_duration_seconds_bucket{" + l + R"(le="+Inf"} 2)"));
  EXPECT_TRUE(has(R"(omniflux_request_duration_seconds_count{model="x-omni",endpoint="/v1/chat/completions"} 2)"));
  EXPECT_TRUE(has(R"(omniflux_request_duration_seconds_sum{model="x-omni",endpoint="/v1/chat/completions"} 3.02)"));
  EXPECT_TRUE(has(R"(omniflux_queue_wait_seconds_bucket{le="0.5"} 1)"));
  EXPECT_TRUE(has("omniflux_queue_wait_seconds_count 1"));
  EXPECT_TRUE(has("omniflux_queue_waiting 3"));
  EXPECT_TRUE(has("omniflux_queue_running 1"));
  EXPECT_TRUE(has("omniflux_denoising_steps_total 28"));
  EXPECT_TRUE(has("omniflux_generated_tokens_total 5"));
  EXPECT_TRUE(has("omniflux_images_total 2"));
  EXPECT_TRUE(has("omniflux_cancellations_total 1"));
  EXPECT_TRUE(has("omniflux_job_failures_total 1"));
  EXPECT_TRUE(has("omniflux_jobs_total 2"));
  EXPECT_TRUE(has("omniflux_process_resident_memory_bytes 12345"));
  EXPECT_EQ(t.find("cuda"), std::string::npos) << "no CUDA figures on the CPU";
  EXPECT_EQ(Metrics::endpoint_of("/v1/models/x-omni"), "/v1/models/{model}");
  EXPECT_EQ(Metrics::endpoint_of("/v1/anything/else"), "other");
  EXPECT_GT(Metrics::process_rss_bytes(), 1 << 20);
}

TEST_F(ServerRoutes, MetricsCountTheWorkAndNeedNoApiKey) {
  HttpRequest g = request("POST", "/v1/images/generations",
                          R"({"model":"flux.1-dev","prompt":"a cube","size":"64x64","steps":3,"n":2})");
  auto scrape = [&] {
    HttpRequest m = request("GET", "/metrics");
    m.headers = {{"Host", "localhost:1"}};  // --api-key guards /v1 only
    const HttpResponse r = router_.handle(m);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    return r.body;
  };
  auto value = [](const std::string& text, const std::string& name) {
    const size_t at = text.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + name.size() + 2));
  };
  const std::string before = scrape();
  ASSERT_EQ(router_.handle(g).status, 200);
  const std::string after = scrape();
  EXPECT_EQ(value(after, "omniflux_denoising_steps_total") - value(before, "omniflux_denoising_steps_total"), 6);
  EXPECT_EQ(value(after, "omniflux_images_total") - value(before, "omniflux_images_total"), 2);
  EXPECT_EQ(value(after, "omniflux_jobs_total") - value(before, "omniflux_jobs_total"), 1);
  EXPECT_EQ(value(after, "omniflux_queue_wait_seconds_count") - value(before, "omniflux_queue_wait_seconds_count"), 1);
  EXPECT_EQ(value(after, "omniflux_queue_running"), 0);
  // a chat counts its sampled tokens
  HttpRequest c = request("POST", "/v1/chat/completions",
                          R"({"model":"x-omni","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"seed":1})");
  const HttpResponse cr = router_.handle(c);
  ASSERT_EQ(cr.status, 200) << cr.body;
  const int64_t completion = body_of(cr)["usage"]["completion_tokens"];
  EXPECT_EQ(value(scrape(), "omniflux_generated_tokens_total") - value(after, "omniflux_generated_tokens_total"),
            completion);

  // --metrics-key guards it; --no-metrics removes it
  ServerOptions keyed = *opt_, off = *opt_;
  keyed.metrics_key = "scraper";
  off.metrics = false;
  Router with_key(keyed, *engine_, *queue_, stopping_, *metrics_), without(off, *engine_, *queue_, stopping_, *metrics_);
  HttpRequest m = request("GET", "/metrics");
  EXPECT_EQ(with_key.handle(m).status, 401) << "the API key is not the metrics key";
  m.headers = {{"Authorization", "Bearer scraper"}};
  EXPECT_EQ(with_key.handle(m).status, 200);
  EXPECT_EQ(without.handle(m).status, 404);
  EXPECT_TRUE(parse_server_args({"--xomni", "x", "--no-metrics"}, nullptr).metrics == false);
  EXPECT_EQ(parse_server_args({"--xomni", "x", "--metrics-key", "k"}, nullptr).metrics_key, "k");
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--no-metrics", "--metrics-key", "k"}, nullptr), std::exception);
}
