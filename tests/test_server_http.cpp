// omniflux-server over real HTTP on 127.0.0.1 with the tiny models of omniflux-tiny: every endpoint
// (PNG decoded and sized, the parameters chunk, a 2-image edit, streamed progress, streamed chat
// equal to the library's answer), every bad request with its status and named field, API keys,
// the load test (32 clients x 4 requests against --max-queue 4: only 200 or 429, alive after, RSS
// flat over a second round), cancellation when a client disconnects, and SIGTERM/SIGINT shutdown.
// Each server is a child process on a port of its own (--port 0); every wait is bounded.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "api.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/plan.h"
#include "omniflux/pipelines/xomni.h"
#include "server_process.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace omniflux;
using Clock = std::chrono::steady_clock;

namespace {

using server_test::Server;
using server_test::Streamed;
using server_test::post_stream;
using server_test::parse_sse;
using server_test::SseEvent;

const fs::path& tiny_root() { return tiny_folders(5, {"flux_1_dev", "uniworld_v1", "siglip2", "x_omni"}); }

// X-Omni without --flux: chat only, the quickest server to start.
std::vector<std::string> chat_only() { return {"--xomni", (tiny_root() / "x-omni").string(), "--threads", "2"}; }

std::vector<std::string> all_models() {
  const fs::path d = tiny_root();
  return {"--uniworld", (d / "uniworld-v1").string(), "--flux",   (d / "flux.1-dev").string(),
          "--siglip",   (d / "siglip2").string(),     "--xomni",  (d / "x-omni").string(),
          "--serve-flux", "--threads", "2"};
}

json body_json(const httplib::Result& r) { return json::parse(r->body); }

// The OpenAI error object of a response, checked for shape.
json error_of(const httplib::Result& r) {
  json j = json::parse(r->body);
  EXPECT_TRUE(j.contains("error")) << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["error"]["type"].is_string());
  EXPECT_TRUE(j["error"].contains("param"));
  EXPECT_TRUE(j["error"].contains("code"));
  return j["error"];
}

Image decode_b64_png(const std::string& b64, PngText* text = nullptr) {
  auto bytes = server::base64_decode(b64);
  EXPECT_TRUE(bytes);
  if (text) *text = read_png_text(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), "response");
  return decode_image(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), "response");
}

std::string png_of(const Image& im) {
  auto v = encode_png(im);
  return std::string(v.begin(), v.end());
}

// Noise compresses badly: a PNG of about w*h*3 bytes.
std::string noise_png(int w, int h, unsigned seed) {
  Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  uint32_t s = seed * 2654435761u + 1;
  for (auto& b : im.rgb) {
    s = s * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(s >> 24);
  }
  return png_of(im);
}

json chat_body(const std::string& model, const std::string& question, const std::vector<std::string>& pngs,
               bool stream, int max_tokens) {
  json content = json::array({{{"type", "text"}, {"text", question}}});
  for (const auto& p : pngs)
    content.push_back({{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64," + server::base64_encode(p)}}}});
  return {{"model", model}, {"stream", stream}, {"max_tokens", max_tokens},
          {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
}

// What a socket receives until the peer closes it or `seconds` pass.
std::string read_until_closed(int fd, int seconds) {
  std::string out;
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char buf[16384];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Raw bytes to the server and whatever comes back until it closes or `seconds` pass.
std::string raw_exchange(int port, const std::string& bytes, int seconds = 30, bool half_close = false) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "";
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may refuse before reading everything
    sent += static_cast<size_t>(n);
  }
  if (half_close) shutdown(fd, SHUT_WR);
  const std::string out = read_until_closed(fd, seconds);
  close(fd);
  return out;
}

int status_of(const std::string& raw) {
  if (raw.rfind("HTTP/1.1 ", 0) != 0) return -1;
  return std::stoi(raw.substr(9, 3));
}

json json_of_raw(const std::string& raw) {
  const size_t b = raw.find("\r\n\r\n");
  return b == std::string::npos ? json() : json::parse(raw.substr(b + 4), nullptr, false);
}

std::string http_post(const std::string& path, const std::string& content_type, const std::string& body,
                      const std::string& extra_headers = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body;
}

json health(const Server& s) {
  auto r = s.client(10).Get("/health");
  EXPECT_TRUE(r);
  if (!r) return json();
  EXPECT_EQ(r->status, 200);
  return json::parse(r->body);
}

}  // namespace

TEST(ServerHttp, HealthModelsAndPage) {
  Server s(all_models());
  ASSERT_GT(s.port(), 0);
  json h = health(s);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["models"], json({"uniworld-v1", "x-omni", "flux.1-dev"}));
  auto c = s.client();
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  json m = body_json(r);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 3u);
  EXPECT_EQ(m["data"][1]["id"], "x-omni");
  EXPECT_EQ(m["data"][1]["defaults"]["steps"], 2);  // the tiny X-Omni decoder config
  r = c.Get("/v1/models/flux.1-dev");
  ASSERT_TRUE(r);
  EXPECT_EQ(body_json(r)["id"], "flux.1-dev");
  r = c.Get("/v1/models/gpt-4");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(error_of(r)["param"], "model");
  r = c.Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(r->body.find("<title>omniflux</title>"), std::string::npos);
  EXPECT_NE(r->body.find("/v1/chat/completions"), std::string::npos);
  // one log line per request
  EXPECT_TRUE(s.wait_for_log("GET /v1/models/gpt-4 404")) << s.log();
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

TEST(ServerHttp, GenerationsForEveryModel) {
  Server s(all_models());
  ASSERT_GT(s.port(), 0);
  auto c = s.client();
  struct Case {
    json body;
    int w, h;
    const char* params;  // expected in the PNG's parameters chunk
  };
  const std::vector<Case> cases = {
      {{{"model", "uniworld-v1"}, {"prompt", "A red fox in the snow"}, {"size", "64x64"}, {"steps", 2}, {"n", 2}, {"seed", 3}},
       64, 64, "Model: UniWorld-V1"},
      {{{"model", "x-omni"}, {"prompt", "a red cube"}, {"size", "64x48"}, {"seed", 7}, {"guidance", 2.0},
        {"negative_prompt", "blurry"}},
       64, 48, "Negative prompt: blurry"},
      {{{"model", "flux.1-dev"}, {"prompt", "a cat"}, {"size", "32x48"}, {"steps", 2}, {"response_format", "b64_json"}},
       32, 48, "Model: FLUX.1-dev"},
  };
  for (const auto& k : cases) {
    auto r = c.Post("/v1/images/generations", k.body.dump(), "application/json");
    ASSERT_TRUE(r) << k.body.dump();
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json; charset=utf-8");
    json j = body_json(r);
    EXPECT_TRUE(j["created"].is_number_integer());
    const size_t n = k.body.value("n", 1);
    ASSERT_EQ(j["data"].size(), n);
    for (size_t i = 0; i < n; ++i) {
      PngText text;
      Image img = decode_b64_png(j["data"][i]["b64_json"], &text);
      EXPECT_EQ(img.width, k.w);
      EXPECT_EQ(img.height, k.h);
      ASSERT_EQ(text.size(), 1u);
      EXPECT_EQ(text[0].first, "parameters");
      EXPECT_EQ(text[0].second.rfind(k.body["prompt"].get<std::string>() + "\n", 0), 0u) << text[0].second;
      EXPECT_NE(text[0].second.find(k.params), std::string::npos) << text[0].second;
    }
    if (n == 2) {
      EXPECT_EQ(j["data"][0]["seed"], 3);
      EXPECT_EQ(j["data"][1]["seed"], 4);  // image i uses seed + i
      EXPECT_NE(j["data"][0]["b64_json"], j["data"][1]["b64_json"]);
    }
  }
  // the same request twice gives the same image (the seed is part of the request)
  auto a = c.Post("/v1/images/generations", cases[2].body.dump(), "application/json");
  auto b = c.Post("/v1/images/generations", cases[2].body.dump(), "application/json");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(body_json(a)["data"][0]["b64_json"], body_json(b)["data"][0]["b64_json"]);
  EXPECT_EQ(s.stop(SIGINT), 0);
}

TEST(ServerHttp, EditWithTwoImagesAndStreamedProgress) {
  Server s(all_models());
  ASSERT_GT(s.port(), 0);
  auto c = s.client();
  httplib::MultipartFormDataItems form = {
      {"model", "uniworld-v1", "", ""},
      {"prompt", "Adapt Image1's content to fit the aesthetic of Image2.", "", ""},
      {"size", "64x64", "", ""},
      {"steps", "2", "", ""},
      {"snap", "false", "", ""},
      {"image[]", png_of(gradient_image(40, 30, 0)), "a.png", "image/png"},
      {"image[]", png_of(gradient_image(30, 40, 9)), "b.png", "image/png"},
  };
  auto r = c.Post("/v1/images/edits", form);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  PngText text;
  Image img = decode_b64_png(body_json(r)["data"][0]["b64_json"], &text);
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 64);
  EXPECT_NE(text.at(0).second.find("Reference images: 2"), std::string::npos);
  // snapping (the default) follows the references' aspect ratio: 4:3 and 3:4 average to square;
  // streamed, an edit's events are image_edit.*
  form[4].content = "true";
  form.push_back({"stream", "true", "", ""});
  r = c.Post("/v1/images/edits", form);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  auto edit_events = parse_sse(r->body);
  ASSERT_GE(edit_events.size(), 3u);
  EXPECT_EQ(edit_events.back().data, "[DONE]");
  const json done = json::parse(edit_events[edit_events.size() - 2].data);
  EXPECT_EQ(done["type"], "image_edit.completed");
  EXPECT_EQ(decode_b64_png(done["b64_json"]).width, decode_b64_png(done["b64_json"]).height);

  // streamed generation: progress events with the denoising steps in order, then the image, then [DONE]
  Streamed st = post_stream(s, "/v1/images/generations",
                            {{"model", "uniworld-v1"}, {"prompt", "a fox"}, {"size", "64x64"}, {"steps", 4}, {"stream", true}});
  EXPECT_EQ(st.status, 200);
  EXPECT_EQ(st.content_type, "text/event-stream");
  auto events = parse_sse(st.body);
  ASSERT_GE(events.size(), 3u) << st.body;
  EXPECT_EQ(events.back().data, "[DONE]");
  std::vector<int64_t> steps;
  std::set<std::string> stages;
  int completed = 0;
  for (const auto& e : events) {
    if (e.data == "[DONE]") continue;
    json j = json::parse(e.data);
    EXPECT_EQ(e.name, j["type"]);
    if (j["type"] == "image_generation.progress") {
      stages.insert(j["stage"]);
      if (j["stage"] == "denoise") {
        EXPECT_EQ(j["total"], 4);
        steps.push_back(j["step"]);
      }
    } else {
      EXPECT_EQ(j["type"], "image_generation.completed");
      EXPECT_EQ(decode_b64_png(j["b64_json"]).width, 64);
      EXPECT_EQ(j["size"], "64x64");
      ++completed;
    }
  }
  EXPECT_EQ(completed, 1);
  EXPECT_TRUE(stages.count("vlm") && stages.count("denoise") && stages.count("decode"));
  ASSERT_FALSE(steps.empty());
  EXPECT_TRUE(std::is_sorted(steps.begin(), steps.end()));
  EXPECT_EQ(steps.back(), 4);
  // X-Omni reports its code sampling as "tokens"
  st = post_stream(s, "/v1/images/generations",
                   {{"model", "x-omni"}, {"prompt", "a cube"}, {"size", "64x48"}, {"stream", true}});
  EXPECT_NE(st.body.find("\"stage\":\"tokens\""), std::string::npos);
  EXPECT_NE(st.body.find("image_generation.completed"), std::string::npos);
  EXPECT_EQ(s.stop(), 0);
}

TEST(ServerHttp, ChatEqualsTheLibraryAndStreams) {
  Server s(all_models());
  ASSERT_GT(s.port(), 0);
  const Image img = gradient_image(80, 64, 3);
  const std::string png = png_of(img);
  // what the library answers, in this process
  auto pipe = XOmniPipeline::load((tiny_root() / "x-omni").string(), "");
  ChatOptions co;
  co.max_new_tokens = 12;
  std::string pieces;
  const ChatAnswer expected = pipe.chat({{"user", {ChatPart::make_text("What is in the picture?"), ChatPart::make_image(img)}}}, co,
                                        [&](const std::string& p) {
                                          pieces += p;
                                          return true;
                                        })
                                  .value();
  EXPECT_EQ(expected.text, pipe.chat(img, "What is in the picture?", {}, 12).value());  // chat.py's one turn

  auto c = s.client();
  auto r = c.Post("/v1/chat/completions", chat_body("x-omni", "What is in the picture?", {png}, false, 12).dump(),
                  "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = body_json(r);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "x-omni");
  EXPECT_EQ(j["choices"][0]["message"]["content"], expected.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], expected.finish == sampling::FinishReason::Length ? "length" : "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], expected.prompt_tokens);
  EXPECT_EQ(j["usage"]["completion_tokens"], expected.completion_tokens);
  EXPECT_EQ(j["usage"]["total_tokens"], expected.prompt_tokens + expected.completion_tokens);
  EXPECT_TRUE(j["system_fingerprint"].is_string());

  Streamed st = post_stream(s, "/v1/chat/completions", chat_body("x-omni", "What is in the picture?", {png}, true, 12));
  EXPECT_EQ(st.status, 200);
  auto events = parse_sse(st.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back().data, "[DONE]");
  std::string streamed;
  std::set<std::string> ids;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json k = json::parse(events[i].data);
    EXPECT_EQ(k["object"], "chat.completion.chunk");
    EXPECT_FALSE(k.contains("usage"));  // not asked for
    ids.insert(k["id"].get<std::string>());
    const json& d = k["choices"][0]["delta"];
    if (i == 0) EXPECT_EQ(d["role"], "assistant");
    if (d.contains("content")) streamed += d["content"].get<std::string>();
    if (i + 2 == events.size()) EXPECT_EQ(k["choices"][0]["finish_reason"], j["choices"][0]["finish_reason"]);
  }
  EXPECT_EQ(ids.size(), 1u);
  EXPECT_EQ(streamed, pieces);
  EXPECT_GT(events.size(), 4u) << "the answer should arrive in several chunks";

  // UniWorld's Qwen2.5-VL answer with two images and a system turn streams token by token too,
  // with the usage chunk last when asked for.
  auto uw = UniWorldPipeline::load((tiny_root() / "uniworld-v1").string(), (tiny_root() / "flux.1-dev").string(),
                                   (tiny_root() / "siglip2").string());
  const Image second = gradient_image(48, 48, 1);
  co.max_new_tokens = 8;
  const ChatAnswer uw_expected =
      uw.chat({ChatTurn::text("system", "Be brief."),
               {"user", {ChatPart::make_text("What is in this picture?"), ChatPart::make_image(img), ChatPart::make_image(second)}}},
              co)
          .value();
  json body = chat_body("uniworld-v1", "What is in this picture?", {png, png_of(second)}, true, 8);
  body["messages"].insert(body["messages"].begin(), json{{"role", "system"}, {"content", "Be brief."}});
  body["stream_options"] = {{"include_usage", true}};
  st = post_stream(s, "/v1/chat/completions", body);
  EXPECT_EQ(st.status, 200);
  events = parse_sse(st.body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back().data, "[DONE]");
  streamed.clear();
  int text_chunks = 0;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    json k = json::parse(events[i].data);
    EXPECT_TRUE(k["usage"].is_null());
    const json& d = k["choices"][0]["delta"];
    if (d.contains("content") && !d["content"].get<std::string>().empty()) ++text_chunks, streamed += d["content"].get<std::string>();
  }
  EXPECT_EQ(streamed, uw_expected.text);
  if (uw_expected.text.size() > 1) EXPECT_GT(text_chunks, 1) << "UniWorld's answer should stream in pieces";
  json last = json::parse(events[events.size() - 2].data);
  EXPECT_TRUE(last["choices"].empty());
  EXPECT_EQ(last["usage"]["prompt_tokens"], uw_expected.prompt_tokens);
  EXPECT_EQ(last["usage"]["completion_tokens"], uw_expected.completion_tokens);
  EXPECT_EQ(s.stop(), 0);
}

TEST(ServerHttp, BadRequestsGetTheRightStatus) {
  auto args = all_models();
  for (const char* a : {"--max-body-bytes", "300k", "--max-image-bytes", "100k", "--read-timeout", "1",
                        "--request-timeout", "3"})
    args.push_back(a);
  Server s(args);
  ASSERT_GT(s.port(), 0);
  const int port = s.port();
  auto gen = [&](const std::string& body, const std::string& ct = "application/json", const std::string& extra = "") {
    return http_post("/v1/images/generations", ct, body, extra);
  };
  struct Case {
    std::string name, raw;
    int status;
    std::string param;  // "" = null
  };
  const std::string png = png_of(gradient_image(32, 32, 0));
  auto edit = [&](const std::string& parts_body, const std::string& boundary = "XyZ") {
    return http_post("/v1/images/edits", "multipart/form-data; boundary=" + boundary, parts_body);
  };
  auto part = [](const std::string& name, const std::string& value, const std::string& filename = "") {
    return "--XyZ\r\nContent-Disposition: form-data; name=\"" + name + "\"" +
           (filename.empty() ? "" : "; filename=\"" + filename + "\"") + "\r\n\r\n" + value + "\r\n";
  };
  const std::string fields = part("model", "uniworld-v1") + part("prompt", "make it snow") + part("size", "64x64");
  std::string five_images = fields;
  for (int i = 0; i < 5; ++i) five_images += part("image[]", png, "a.png");
  const std::vector<Case> cases = {
      {"malformed JSON", gen("{\"model\": \"uniworld-v1\", "), 400, ""},
      {"wrong type", gen(R"({"model":"uniworld-v1","prompt":"p","n":"two"})"), 400, "n"},
      {"unknown model", gen(R"({"model":"dall-e-3","prompt":"p"})"), 404, "model"},
      {"bad size", gen(R"({"model":"uniworld-v1","prompt":"p","size":"100x100"})"), 400, "size"},
      {"too many steps", gen(R"({"model":"uniworld-v1","prompt":"p","steps":5000})"), 400, "steps"},
      {"n over the limit", gen(R"({"model":"uniworld-v1","prompt":"p","n":9})"), 400, "n"},
      {"prompt over the limit", gen(json{{"model", "uniworld-v1"}, {"prompt", std::string(20000, 'a')}}.dump()), 400, "prompt"},
      {"pixels over the limit", gen(R"({"model":"uniworld-v1","prompt":"p","size":"4096x4096"})"), 400, "size"},
      {"not JSON content type", gen(R"({"prompt":"p"})", "text/plain"), 415, ""},
      {"compressed body", gen(R"({"prompt":"p"})", "application/json", "Content-Encoding: gzip\r\n"), 415, ""},
      {"body over the limit", http_post("/v1/images/generations", "application/json", std::string(400 * 1024, ' ')), 413, ""},
      {"declared body over the limit",
       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n",
       413, ""},
      {"chunked body over the limit",
       [] {
         std::string r = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n";
         const std::string chunk(64 * 1024, 'a');
         for (int i = 0; i < 8; ++i) r += "10000\r\n" + chunk + "\r\n";
         return r + "0\r\n\r\n";
       }(),
       413, ""},
      {"non-image bytes in chat",
       http_post("/v1/chat/completions", "application/json",
                 json{{"model", "x-omni"},
                      {"messages", {{{"role", "user"},
                                     {"content", {{{"type", "text"}, {"text", "Q"}},
                                                  {{"type", "image_url"},
                                                   {"image_url", {{"url", "data:image/png;base64," + server::base64_encode("hello")}}}}}}}}}}
                     .dump()),
       400, "messages[0].content[1].image_url.url"},
      {"non-image bytes in an edit", edit(fields + part("image[]", "not an image at all", "a.png") + "--XyZ--\r\n"), 400,
       "image[0]"},
      {"too many images", edit(five_images + "--XyZ--\r\n"), 400, "image"},
      {"image over the byte limit", edit(fields + part("image[]", std::string(120 * 1024, 'x'), "a.png") + "--XyZ--\r\n"), 413,
       "image[0]"},
      {"truncated multipart", edit(fields + "--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"\r\n\r\nabc"), 400, ""},
      {"multipart without boundary",
       http_post("/v1/images/edits", "multipart/form-data", fields), 400, ""},
      {"edit as JSON", http_post("/v1/images/edits", "application/json", "{}"), 415, ""},
      {"huge headers",
       "GET /health HTTP/1.1\r\nHost: x\r\n" + [] {
         std::string h;
         for (int i = 0; i < 40; ++i) h += "X-Filler-" + std::to_string(i) + ": " + std::string(4000, 'a') + "\r\n";
         return h;
       }() + "\r\n",
       431, ""},
      {"one header line too long", "GET /health HTTP/1.1\r\nX-Long: " + std::string(10000, 'a') + "\r\n\r\n", 400, ""},
      {"unknown path", "GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, ""},
      {"wrong method", "GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405, ""},
      {"garbage request line", "HELLO\r\n\r\n", 400, ""},
      {"another site's page", gen(R"({"model":"uniworld-v1","prompt":"p"})", "application/json",
                                  "Origin: http://evil.example\r\n"), 403, ""},
  };
  for (const auto& k : cases) {
    const std::string raw = k.raw;
    const std::string resp = raw_exchange(port, raw);
    EXPECT_EQ(status_of(resp), k.status) << k.name << "\n" << resp.substr(0, 400);
    json e = json_of_raw(resp);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << k.name << "\n" << resp.substr(0, 400);
    EXPECT_TRUE(e["error"]["message"].is_string()) << k.name;
    if (k.param.empty()) EXPECT_TRUE(e["error"]["param"].is_null()) << k.name;
    else EXPECT_EQ(e["error"]["param"], k.param) << k.name;
  }
  // a GIF (or BMP, TGA, PSD, PNM) upload: the client is told which formats are accepted
  {
    const std::string resp = raw_exchange(port, edit(fields + part("image[]", "GIF89a\x01\x00\x01\x00", "a.gif") + "--XyZ--\r\n"));
    EXPECT_EQ(status_of(resp), 400) << resp.substr(0, 400);
    json e = json_of_raw(resp);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << resp.substr(0, 400);
    EXPECT_EQ(e["error"]["param"], "image[0]");
    EXPECT_EQ(e["error"]["code"], "invalid_image");
    EXPECT_EQ(e["error"]["message"],
              "not a readable image: unsupported image format (image[0]): expected PNG, JPEG, WebP, got GIF");
  }
  // a slow client: half a request line, then silence; cut after --read-timeout while others are served
  {
    std::string slow_resp;
    const auto t0 = Clock::now();
    std::thread slow([&] { slow_resp = raw_exchange(port, "POST /v1/chat/comp", 20); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    health(s);
    slow.join();
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(15)) << "the stalled connection was never closed";
    EXPECT_TRUE(slow_resp.empty() || status_of(slow_resp) >= 400) << slow_resp.substr(0, 200);
  }
  // a trickling client: one header byte at a time stays under --read-timeout but not --request-timeout
  {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const std::string head = "GET /health HTTP/1.1\r\nX-Slow: " + std::string(200, 'a');
    bool cut = false;
    for (char ch : head) {
      if (send(fd, &ch, 1, MSG_NOSIGNAL) != 1) {
        cut = true;
        break;
      }
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 500) > 0) {  // the server answered (408) or closed: it cut us off
        cut = true;
        break;
      }
    }
    close(fd);
    EXPECT_TRUE(cut) << "a 100-second trickle should be cut by --request-timeout 3";
  }
  health(s);
  EXPECT_EQ(s.stop(), 0);
}

TEST(ServerHttp, ApiKey) {
  auto args = chat_only();
  args.push_back("--api-key");
  args.push_back("sekret-123");
  Server s(args);
  ASSERT_GT(s.port(), 0);
  auto c = s.client();
  auto r = c.Get("/health");  // needs no key
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(error_of(r)["code"], "invalid_api_key");
  r = c.Get("/v1/models", {{"Authorization", "Bearer wrong"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = c.Post("/v1/chat/completions", {{"Authorization", "Bearer sekret-12"}}, R"({"messages":[]})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = c.Get("/v1/models", {{"Authorization", "Bearer sekret-123"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(s.stop(), 0);
}

TEST(ServerHttp, LoadOnlyOkOrTooManyRequestsAndFlatMemory) {
  auto args = all_models();
  args.push_back("--max-queue");
  args.push_back("4");
  args.push_back("--max-connections-per-ip");  // the 32 clients share 127.0.0.1: this test is about the queue
  args.push_back("64");
  // glibc gives threads arenas of their own, and 21 connection threads warm theirs up over several
  // rounds (RSS +4 to +10 MiB a round for 7 rounds, measured), which hides what this test looks for.
  // With one arena a round moves the RSS by 0.1 to 5.4 MiB (measured), so a leak stands out.
  Server s(args, {"MALLOC_ARENA_MAX=1"});
  ASSERT_GT(s.port(), 0);
  // half the requests carry a ~430 KiB image (590 KiB as base64, 430 KiB decoded), so keeping
  // anything of a request would show in the RSS
  std::vector<std::string> images;
  for (unsigned i = 0; i < 4; ++i) images.push_back(noise_png(384, 384, i));
  std::map<std::string, int> transport_errors;  // requests that ended with no HTTP status, by httplib's reason
  auto round = [&](std::map<int, int>& statuses) {
    std::mutex m;
    std::vector<std::thread> clients;
    std::atomic<int> retry_after_missing{0};
    for (int t = 0; t < 32; ++t) {
      clients.emplace_back([&, t] {
        auto c = s.client();
        for (int k = 0; k < 4; ++k) {
          const bool image = (t + k) % 2 == 0;
          httplib::Result r =
              image ? c.Post("/v1/images/generations",
                             json{{"model", "uniworld-v1"}, {"prompt", "load " + std::to_string(t)}, {"size", "32x32"}, {"steps", 1}}
                                 .dump(),
                             "application/json")
                    : c.Post("/v1/chat/completions",
                             chat_body("uniworld-v1", "What is this?", {images[static_cast<size_t>(t % 4)]}, false, 2).dump(),
                             "application/json");
          std::lock_guard<std::mutex> lock(m);
          const int st = r ? r->status : -1;
          ++statuses[st];
          if (!r) ++transport_errors[httplib::to_string(r.error())];
          if (st == 429 && r->get_header_value("Retry-After").empty()) ++retry_after_missing;
          if (st == 429) EXPECT_EQ(error_of(r)["code"], "queue_full");
        }
      });
    }
    for (auto& c : clients) c.join();
    EXPECT_EQ(retry_after_missing.load(), 0);
  };
  std::map<int, int> first, second;
  round(first);
  const long rss1 = s.rss_kib();
  round(second);
  const long rss2 = s.rss_kib();
  for (const auto* st : {&first, &second}) {
    int total = 0;
    for (const auto& [code, count] : *st) {
      EXPECT_TRUE(code == 200 || code == 429) << "status " << code << " x" << count;
      total += count;
    }
    EXPECT_EQ(total, 128);
    EXPECT_GT(st->count(200) ? st->at(200) : 0, 0);
  }
  for (const auto& [what, count] : transport_errors) ADD_FAILURE() << "no HTTP status (" << what << ") x" << count;
  json h = health(s);
  EXPECT_EQ(h["queue"]["waiting"], 0);
  // 64 requests a round carry 1 MiB of body plus decoded image: keeping them would add ~64 MiB a
  // round, keeping one in four 16 MiB.
  std::printf("server RSS after round 1: %ld KiB, after round 2: %ld KiB (statuses round 2: 200 x%d, 429 x%d)\n", rss1,
              rss2, second.count(200) ? second[200] : 0, second.count(429) ? second[429] : 0);
  EXPECT_GT(rss1, 0);
  EXPECT_LT(rss2 - rss1, 16 * 1024) << "RSS grew from " << rss1 << " to " << rss2 << " KiB";
  EXPECT_EQ(s.stop(), 0);
}

// The load test's lost connections (issue 27): a burst of clients met httplib's listen backlog of
// 5 while the accepting thread was off the CPU, so handshakes were dropped; the clients' retries
// backed off past the server's waits and requests ended with no HTTP status. A stopped server
// accepts nothing: its kernel must hold every connection until it goes on.
TEST(ServerHttp, ConnectionsWaitWhileTheServerCannotAccept) {
  auto args = chat_only();
  args.push_back("--max-connections-per-ip");
  args.push_back("64");
  Server s(args);
  ASSERT_GT(s.port(), 0);
  health(s);
  ASSERT_EQ(kill(s.pid(), SIGSTOP), 0);
  constexpr int kClients = 48;
  std::vector<int> status(kClients, 0);
  std::vector<std::string> failure(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", s.port());
      c.set_connection_timeout(10, 0);  // shorter than the stop: a dropped handshake fails the request
      c.set_read_timeout(60, 0);
      auto r = c.Get("/health");
      status[static_cast<size_t>(i)] = r ? r->status : -1;
      if (!r) failure[static_cast<size_t>(i)] = httplib::to_string(r.error());
    });
  std::this_thread::sleep_for(std::chrono::seconds(12));
  ASSERT_EQ(kill(s.pid(), SIGCONT), 0);
  for (auto& c : clients) c.join();
  for (int i = 0; i < kClients; ++i)
    EXPECT_EQ(status[static_cast<size_t>(i)], 200) << "client " << i << ": " << failure[static_cast<size_t>(i)];
  EXPECT_EQ(s.stop(), 0);
}

// A body refused from its head (415 here) while the client is still sending it: the server reads
// and drops the rest instead of closing on unread bytes, whose reset would destroy the response
// before the client reads it. The body trickles for longer than the old fixed 2-second drain.
TEST(ServerHttp, ABodyRefusedEarlyStillGetsItsResponse) {
  Server s(chat_only());
  ASSERT_GT(s.port(), 0);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(s.port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  constexpr size_t kChunk = 256 * 1024, kChunks = 20;  // 5 MiB over about 5 s
  const std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                           "Content-Length: " + std::to_string(kChunk * kChunks) + "\r\n\r\n";
  ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  const std::string chunk(kChunk, 'x');
  size_t sent_chunks = 0;
  for (; sent_chunks < kChunks; ++sent_chunks) {
    size_t off = 0;
    while (off < chunk.size()) {
      const ssize_t n = send(fd, chunk.data() + off, chunk.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    if (off < chunk.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_EQ(sent_chunks, kChunks) << "the server reset the connection while the body was arriving";
  // Only now read, as clients that send the whole request first do (httplib, curl without Expect).
  const std::string got = read_until_closed(fd, 10);
  close(fd);
  EXPECT_EQ(status_of(got), 415) << got.substr(0, 200);
  EXPECT_NE(got.find("Connection: close"), std::string::npos);
  EXPECT_EQ(json_of_raw(got)["error"]["code"], "unsupported_media_type");
  health(s);
  EXPECT_EQ(s.stop(), 0);
}

namespace {
// A TCP connection to the server from a chosen loopback address (127.0.0.2 is another client).
int connect_from(const char* local, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in me{};
  me.sin_family = AF_INET;
  inet_pton(AF_INET, local, &me.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&me), sizeof me) != 0) {
    close(fd);
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// One whole exchange from `local`: the status, and the seconds until the response was complete.
std::pair<int, double> timed_exchange(const char* local, int port, const std::string& request) {
  const auto t0 = Clock::now();
  const int fd = connect_from(local, port);
  if (fd < 0) return {-1, 0};
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  const std::string out = read_until_closed(fd, 120);
  close(fd);
  return {status_of(out), std::chrono::duration<double>(Clock::now() - t0).count()};
}
}  // namespace

// 200 connections from one address dribble their request heads (a line every 2 s). Another
// address must still be answered promptly: the per-address limit refuses the excess at once and
// the head deadline frees the rest. The figures are printed; the bounds are generous.
TEST(ServerHttp, SlowClientsFromOneAddressDoNotStarveOthers) {
  auto args = all_models();
  for (const char* a : {"--head-timeout", "6", "--read-timeout", "5"}) args.push_back(a);
  Server s(args);
  ASSERT_GT(s.port(), 0);
  std::vector<int> slow;
  for (int i = 0; i < 200; ++i) {
    const int fd = connect_from("127.0.0.1", s.port());
    ASSERT_GE(fd, 0) << "connection " << i;
    send(fd, "GET /health HTTP/1.1\r\n", 23, MSG_NOSIGNAL);
    slow.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread dribble([&] {
    for (int line = 0; !stop; ++line) {
      for (int fd : slow) send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL | MSG_DONTWAIT);
      for (int k = 0; k < 20 && !stop; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto probe = timed_exchange("127.0.0.2", s.port(), "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string gen = json{{"model", "uniworld-v1"}, {"prompt", "fox"}, {"size", "64x64"}, {"steps", 1}}.dump();
  const auto image = timed_exchange("127.0.0.2", s.port(), http_post("/v1/images/generations", "application/json", gen,
                                                                     "Connection: close\r\n"));
  stop = true;
  dribble.join();
  // What the slow connections got: most a 429 at once, the rest a 408 at the head deadline.
  int refused = 0, timed_out = 0;
  for (int fd : slow) {
    const std::string out = read_until_closed(fd, 15);
    close(fd);
    refused += status_of(out) == 429;
    timed_out += status_of(out) == 408;
  }
  std::printf("while 200 slow connections dribbled from 127.0.0.1: /health from 127.0.0.2 in %.3f s, a 64x64 "
              "generation in %.3f s; slow ones: %d refused (429), %d cut at the head deadline (408)\n",
              probe.second, image.second, refused, timed_out);
  EXPECT_EQ(probe.first, 200);
  EXPECT_LT(probe.second, 5.0);
  EXPECT_EQ(image.first, 200);
  EXPECT_LT(image.second, 30.0);
  EXPECT_EQ(refused, 200 - 8);  // --max-connections-per-ip 8 by default
  EXPECT_EQ(timed_out, 8);
  json h = health(s);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(s.stop(), 0);
}

// Admission by plan: with the host-RAM budget set between the planned peaks of a small and a
// large request, the small one runs and the large one is refused with 422 before it queues; with
// a budget below everything, chat is refused too and the server stays up.
TEST(ServerHttp, RequestsThatCannotFitAreRefusedByPlan) {
  const fs::path d = tiny_root();
  auto peak = [&](int64_t side) {
    plan::UniWorldRequest q;
    q.width = q.height = side;
    q.ref_images = 0;
    q.prompt = "fox";
    return plan::estimate_offload(
               plan::plan_uniworld((d / "uniworld-v1").string(), (d / "flux.1-dev").string(), (d / "siglip2").string(), q),
               "fp32")
        .peak(Offload::None);
  };
  const int64_t small = peak(64), large = peak(1024);
  ASSERT_LT(small, large);
  char budget[32];
  std::snprintf(budget, sizeof budget, "%.9f", static_cast<double>(small + large) / 2 / double(int64_t(1) << 30));
  auto args = all_models();
  args.push_back("--max-ram");
  args.push_back(budget);
  {
    Server s(args);
    ASSERT_GT(s.port(), 0);
    auto c = s.client();
    auto r = c.Post("/v1/images/generations",
                    json{{"model", "uniworld-v1"}, {"prompt", "fox"}, {"size", "64x64"}, {"steps", 1}}.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    r = c.Post("/v1/images/generations",
               json{{"model", "uniworld-v1"}, {"prompt", "fox"}, {"size", "1024x1024"}, {"steps", 1}}.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << r->body;
    const json e = error_of(r);
    EXPECT_EQ(e["code"], "insufficient_memory");
    const std::string msg = e["message"];
    EXPECT_NE(msg.find("1024x1024"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--max-ram"), std::string::npos) << msg;
    EXPECT_EQ(health(s)["queue"]["completed"], 1);  // the refused one never ran
    EXPECT_EQ(s.stop(), 0);
  }
  args.back() = "0.000001";  // about 1 KiB: nothing fits
  Server s(args);
  ASSERT_GT(s.port(), 0);
  auto r = s.client().Post("/v1/chat/completions", chat_body("uniworld-v1", "Hi?", {}, false, 4).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_EQ(error_of(r)["code"], "insufficient_memory");
  EXPECT_EQ(health(s)["status"], "ok");
  EXPECT_EQ(s.stop(), 0);
}

TEST(ServerHttp, DisconnectCancelsTheRequest) {
  auto args = all_models();
  args.push_back("--max-steps");
  args.push_back("1000");
  Server s(args);
  ASSERT_GT(s.port(), 0);
  // 1000 DiT steps at 256x256 run for minutes on the tiny model; a cancelled one ends within a step
  const json long_job = {{"model", "uniworld-v1"}, {"prompt", "slow"}, {"size", "256x256"}, {"steps", 1000}, {"stream", true}};
  auto wait_idle = [&](int seconds) {
    const auto end = Clock::now() + std::chrono::seconds(seconds);
    while (Clock::now() < end) {
      json h = health(s);
      if (h["queue"]["running"] == 0 && h["queue"]["waiting"] == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  // streamed: leave after the second denoising step
  Streamed st = post_stream(s, "/v1/images/generations", long_job, [](const std::string& body) {
    return body.find("\"stage\":\"denoise\",\"step\":2") == std::string::npos;
  });
  EXPECT_NE(st.body.find("\"step\":2"), std::string::npos);
  EXPECT_TRUE(wait_idle(30)) << "the streamed job still runs after its client left";
  // not streamed: the client gives up while its job runs
  {
    json j = long_job;
    j["stream"] = false;
    std::thread gone([&] {
      raw_exchange(s.port(), http_post("/v1/images/generations", "application/json", j.dump()), 1);
    });
    gone.join();
    EXPECT_TRUE(wait_idle(30)) << "the job still runs after its client left";
  }
  // waiting in the queue: leaves the queue when its client goes
  {
    std::atomic<bool> stop_first{false};
    std::thread first([&] {
      post_stream(s, "/v1/images/generations", long_job, [&](const std::string&) { return !stop_first.load(); });
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    json j = long_job;
    j["stream"] = false;
    std::thread second([&] { raw_exchange(s.port(), http_post("/v1/images/generations", "application/json", j.dump()), 1); });
    second.join();
    const auto end = Clock::now() + std::chrono::seconds(10);
    json h;
    while (Clock::now() < end) {
      h = health(s);
      if (h["queue"]["waiting"] == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(h["queue"]["waiting"], 0);
    EXPECT_EQ(h["queue"]["running"], 1);  // the first one still runs
    stop_first = true;
    first.join();
    EXPECT_TRUE(wait_idle(30));
  }
  // X-Omni's code sampling stops within a token (four 960x960 grids are 14400 codes, a minute or
  // more of sampling on the tiny model)
  st = post_stream(s, "/v1/images/generations",
                   {{"model", "x-omni"}, {"prompt", "p"}, {"size", "960x960"}, {"n", 4}, {"stream", true}},
                   [](const std::string& body) { return body.find("\"stage\":\"tokens\"") == std::string::npos; });
  EXPECT_TRUE(wait_idle(20)) << "X-Omni kept sampling after its client left";
  EXPECT_TRUE(s.wait_for_log(" 499 ")) << s.log();  // the non-streamed ones that left
  EXPECT_EQ(s.stop(), 0);
}

TEST(ServerHttp, SigtermCancelsTheRunningRequestAndExitsZero) {
  auto args = all_models();
  args.push_back("--max-steps");
  args.push_back("1000");
  Server s(args);
  ASSERT_GT(s.port(), 0);
  server_test::SlowStream slow(s);
  ASSERT_TRUE(slow.started());
  EXPECT_EQ(s.stop(SIGTERM, 30), 0) << s.log();
  const Streamed& st = slow.result();
  // the stream ended with an error event saying why, then [DONE]
  auto events = parse_sse(st.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back().data, "[DONE]");
  EXPECT_EQ(events[events.size() - 2].name, "error");
  json err = json::parse(events[events.size() - 2].data);
  EXPECT_EQ(err["type"], "error");
  EXPECT_EQ(err["error"]["code"], "cancelled");
}

TEST(ServerHttp, SigintOnAnIdleServerExitsZero) {
  Server s(chat_only());
  ASSERT_GT(s.port(), 0);
  health(s);
  EXPECT_EQ(s.stop(SIGINT, 30), 0);
}
