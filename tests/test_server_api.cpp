// omniflux-server's HTTP-independent parts: flag parsing, request validation into typed requests
// (each bad field names itself), the OpenAI response shapes, base64 and data: URIs, SSE framing, and
// the job queue (order, bound, cancellation, shutdown) driven without a socket.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "api.h"
#include "jobs.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "options.h"
#include "server_test_util.h"
#include "sse.h"

using namespace omniflux;
using namespace omniflux::server;
using nlohmann::json;

namespace {

Catalog test_catalog(bool xomni_decoder = true) {
  Catalog c;
  ModelCaps uw = default_caps(ModelId::UniWorld), xo = default_caps(ModelId::XOmni);
  uw.vocab_size = 1000;
  xo.generations = xomni_decoder;
  c.models = {uw, xo, default_caps(ModelId::Flux)};
  return c;
}

std::string png_bytes(int w, int h) {
  Image img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3, 128)};
  auto v = encode_png(img);
  return std::string(v.begin(), v.end());
}

std::string data_uri(const std::string& bytes) { return "data:image/png;base64," + base64_encode(bytes); }

}  // namespace

TEST(ServerOptions, ParsesFlagsAndRefusesBadOnes) {
  bool help = false;
  ServerOptions o = parse_server_args({"--uniworld", "u", "--flux", "f", "--siglip", "s", "--port", "0", "--max-queue",
                                       "4", "--max-body-bytes", "2M", "--offload", "model", "--max-vram", "24"},
                                      &help);
  EXPECT_FALSE(help);
  EXPECT_EQ(o.host, "127.0.0.1");  // loopback unless asked
  EXPECT_EQ(o.port, 0);
  EXPECT_EQ(o.limits.max_queue, 4u);
  EXPECT_EQ(o.limits.max_body_bytes, 2 << 20);
  EXPECT_EQ(o.rt.offload, Offload::Model);
  EXPECT_DOUBLE_EQ(o.rt.max_vram_gb, 24.0);
  EXPECT_FALSE(o.serve_flux);
  EXPECT_TRUE(parse_server_args({"--flux", "f"}, &help).serve_flux);  // --flux alone serves FLUX.1-dev
  EXPECT_THROW(parse_server_args({}, &help), Error);
  EXPECT_THROW(parse_server_args({"--uniworld", "u"}, &help), Error);  // needs --flux and --siglip
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--port", "70000"}, &help), Error);
  // the slow-client and memory flags
  o = parse_server_args({"--xomni", "x", "--request-timeout", "5"}, &help);
  EXPECT_EQ(o.head_timeout_s, 5);  // 10 by default, never past the request deadline
  EXPECT_EQ(parse_server_args({"--xomni", "x"}, &help).head_timeout_s, 10);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--head-timeout", "70"}, &help), Error);  // > --request-timeout 60
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--max-connections-per-ip", "0"}, &help), Error);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--max-ram", "-1"}, &help), Error);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--max-ram", "lots"}, &help), Error);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--listen-backlog", "0"}, &help), Error);
  EXPECT_FALSE(parse_server_args({"--xomni", "x", "--no-plan-admission"}, &help).plan_admission);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--max-images", "5"}, &help), Error);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--max-queue"}, &help), Error);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--bogus"}, &help), Error);
  EXPECT_THROW(parse_server_args({"--xomni", "x", "--offload", "disk"}, &help), Error);
  parse_server_args({"--help"}, &help);
  EXPECT_TRUE(help);
}

TEST(ServerApi, ImageGenerationDefaultsAndExtensions) {
  const Catalog c = test_catalog();
  Limits l;
  ImageRequest r = parse_image_generation(json{{"model", "uniworld-v1"}, {"prompt", "a fox"}}, c, l);
  EXPECT_EQ(r.model, ModelId::UniWorld);
  EXPECT_EQ(r.width, 1024);
  EXPECT_EQ(r.steps, 28);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  r = parse_image_generation(json{{"model", "x-omni"}, {"prompt", "a fox"}, {"size", "64x48"}, {"n", 2}, {"seed", 7},
                                  {"guidance", 3.0}, {"negative_prompt", "blurry"}, {"top_k", 10},
                                  {"response_format", "b64_json"}, {"stream", true}, {"user", "u1"}},
                             c, l);
  EXPECT_EQ(r.model, ModelId::XOmni);
  EXPECT_EQ(r.width, 64);
  EXPECT_EQ(r.height, 48);
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(*r.top_k, 10);
  EXPECT_EQ(*r.negative_prompt, "blurry");
  EXPECT_TRUE(r.stream);
  r = parse_image_generation(json{{"model", "flux.1-dev"}, {"prompt", "p"}, {"negative_prompt", ""}, {"true_cfg_scale", 4}},
                             c, l);
  EXPECT_DOUBLE_EQ(*r.true_cfg_scale, 4.0);
  // the fields a client may send that change nothing here, and JPEG output
  r = parse_image_generation(json{{"model", "uniworld-v1"}, {"prompt", "p"}, {"quality", "auto"}, {"style", "vivid"},
                                  {"background", "opaque"}, {"moderation", "low"}, {"partial_images", 0},
                                  {"output_format", "jpeg"}, {"output_compression", 80}},
                             c, l);
  EXPECT_EQ(r.output_format, "jpeg");
  EXPECT_EQ(r.output_compression, 80);
  // null counts as absent (OpenAI clients send it)
  r = parse_image_generation(json{{"model", "uniworld-v1"}, {"prompt", "p"}, {"size", nullptr}, {"n", nullptr}}, c, l);
  EXPECT_EQ(r.width, 1024);
}

TEST(ServerApi, EveryBadImageFieldIsNamed) {
  const Catalog c = test_catalog(false);
  Limits l;
  l.max_prompt_bytes = 32;
  l.max_pixels = 512 * 512;
  auto gen = [&](json j) { return error_of([&] { parse_image_generation(j, c, l); }); };
  const json base = {{"model", "uniworld-v1"}, {"prompt", "p"}, {"size", "64x64"}};
  auto with = [&](const char* k, json v) {
    json j = base;
    j[k] = v;
    return j;
  };
  struct Case {
    json body;
    int status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {with("prompt", 5), 400, "prompt"},
      {with("prompt", ""), 400, "prompt"},
      {with("prompt", std::string(33, 'a')), 400, "prompt"},
      {with("prompt", std::string("a\0b", 3)), 400, "prompt"},
      {json{{"model", "uniworld-v1"}}, 400, "prompt"},
      {with("model", "dall-e-3"), 404, "model"},
      {with("model", "x-omni"), 400, "model"},  // chat only without --flux
      {with("size", "1024"), 400, "size"},
      {with("size", "100x100"), 400, "size"},
      {with("size", "1024x1024"), 400, "size"},  // over max_pixels
      {with("size", "-16x16"), 400, "size"},
      {with("n", 0), 400, "n"},
      {with("n", 5), 400, "n"},
      {with("n", 1.5), 400, "n"},
      {with("steps", 101), 400, "steps"},
      {with("steps", "4"), 400, "steps"},
      {with("seed", -1), 400, "seed"},
      {with("guidance", "high"), 400, "guidance"},
      {with("response_format", "url"), 400, "response_format"},
      {with("output_format", "webp"), 400, "output_format"},
      {with("output_compression", 50), 400, "output_compression"},  // PNG is lossless
      {with("output_compression", 101), 400, "output_compression"},
      {with("background", "transparent"), 400, "background"},
      {with("partial_images", 2), 400, "partial_images"},
      {with("input_fidelity", "low"), 400, "input_fidelity"},  // edits only
      {with("style", "natural"), 400, "style"},
      {with("qualty", "auto"), 400, "qualty"},                 // a typo stays unknown
      {with("stream", "yes"), 400, "stream"},
      {with("negative_prompt", "x"), 400, "negative_prompt"},  // UniWorld has none
      {with("top_k", 5), 400, "top_k"},                        // X-Omni's
      {with("true_cfg_scale", 2), 400, "true_cfg_scale"},      // FLUX's
      {with("snap", true), 400, "snap"},                        // edits only
      {with("quality", "hd"), 400, "quality"},                  // only "auto"
  };
  for (const auto& k : cases) {
    const ApiError e = gen(k.body);
    EXPECT_EQ(e.status, k.status) << k.body.dump();
    EXPECT_EQ(e.param, k.param) << k.body.dump();
    const json b = e.body();
    EXPECT_TRUE(b["error"]["message"].is_string());
    EXPECT_EQ(b["error"]["param"], k.param);
    EXPECT_TRUE(b["error"]["type"].is_string());
  }
  // FLUX: a negative prompt needs true CFG and the other way round
  EXPECT_EQ(gen(json{{"model", "flux.1-dev"}, {"prompt", "p"}, {"size", "64x64"}, {"negative_prompt", "x"}}).param, "negative_prompt");
  EXPECT_EQ(gen(json{{"model", "flux.1-dev"}, {"prompt", "p"}, {"size", "64x64"}, {"true_cfg_scale", 3}}).param, "true_cfg_scale");
  // with more than one model serving the endpoint, the model must be named
  EXPECT_EQ(gen(json{{"prompt", "p"}}).param, "model");
}

TEST(ServerApi, MalformedJsonBodies) {
  for (const std::string body : {"", "{", "[1,2]", "\"x\"", "{\"a\":}", "nul", "{\"prompt\": \"\xff\"}"}) {
    const ApiError e = error_of([&] { parse_json_body(body); });
    EXPECT_EQ(e.status, 400) << body;
  }
  std::string deep(100000, '[');
  EXPECT_EQ(error_of([&] { parse_json_body("{\"a\":" + deep); }).status, 400);
  EXPECT_EQ(parse_json_body("{\"a\": [1, {\"b\": 2}]}")["a"][1]["b"], 2);
}

TEST(ServerApi, EditFormFieldsAndImages) {
  const Catalog c = test_catalog();
  Limits l;
  l.max_image_bytes = 100000;
  l.max_image_pixels = 64 * 64;
  const std::string img = png_bytes(40, 30);
  std::vector<FormPart> parts = {{"model", "", "", "uniworld-v1"}, {"prompt", "", "", "make it snow"},
                                 {"size", "", "", "64x64"},        {"steps", "", "", "3"},
                                 {"snap", "", "", "false"},        {"image[]", "a.png", "image/png", img},
                                 {"image[]", "b.png", "image/png", img}};
  ImageRequest r = parse_image_edit(parts, c, l);
  EXPECT_TRUE(r.edit);
  ASSERT_EQ(r.images.size(), 2u);
  EXPECT_EQ(r.images[1].width, 40);
  EXPECT_EQ(r.steps, 3);
  EXPECT_FALSE(*r.snap);
  auto edit_error = [&](std::vector<FormPart> p) { return error_of([&] { parse_image_edit(p, c, l); }); };
  auto without_images = std::vector<FormPart>(parts.begin(), parts.begin() + 5);
  EXPECT_EQ(edit_error(without_images).param, "image");
  auto five = without_images;
  for (int i = 0; i < 5; ++i) five.push_back({"image[]", "", "", img});
  EXPECT_EQ(edit_error(five).param, "image");
  auto not_image = without_images;
  not_image.push_back({"image[]", "x.png", "image/png", "GIF89a not really"});
  EXPECT_EQ(edit_error(not_image).status, 400);
  EXPECT_EQ(edit_error(not_image).param, "image[0]");
  // The client reads which formats are accepted (GIF, BMP, TGA, PSD and PNM are not).
  EXPECT_EQ(edit_error(not_image).message,
            "not a readable image: unsupported image format (image[0]): expected PNG, JPEG, WebP, got GIF");
  auto big = without_images;
  big.push_back({"image[]", "", "", png_bytes(65, 64)});  // more pixels than allowed, refused before decoding
  EXPECT_EQ(edit_error(big).param, "image[0]");
  auto bad_int = parts;
  bad_int[3].data = "3x";
  EXPECT_EQ(edit_error(bad_int).param, "steps");
  auto dup = parts;
  dup.push_back({"prompt", "", "", "again"});
  EXPECT_EQ(edit_error(dup).param, "prompt");
  auto mask = parts;
  mask.push_back({"mask", "", "", img});
  EXPECT_EQ(edit_error(mask).param, "mask");
  auto bad_utf8 = parts;
  bad_utf8[1].data = "\xc3\x28";
  EXPECT_EQ(edit_error(bad_utf8).param, "prompt");
  auto xomni = parts;
  xomni[0].data = "x-omni";
  EXPECT_EQ(edit_error(xomni).param, "model");  // X-Omni has no editing
}

TEST(ServerApi, ChatMessagesAndImages) {
  const Catalog c = test_catalog();
  Limits l;
  const std::string uri = data_uri(png_bytes(32, 32));
  json body = {{"model", "x-omni"},
               {"stream", true},
               {"max_tokens", 8},
               {"messages",
                {{{"role", "user"},
                  {"content", {{{"type", "text"}, {"text", "What is it?"}}, {{"type", "image_url"}, {"image_url", {{"url", uri}}}}}}}}}};
  ChatRequest r = parse_chat(body, c, l);
  EXPECT_EQ(r.model, ModelId::XOmni);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.options.max_new_tokens, 8);
  ASSERT_EQ(r.turns.size(), 1u);
  EXPECT_EQ(r.turns[0].role, "user");
  ASSERT_EQ(r.turns[0].parts.size(), 2u);
  EXPECT_EQ(r.turns[0].parts[0].text, "What is it?");
  ASSERT_TRUE(r.turns[0].parts[1].is_image);
  EXPECT_EQ(r.turns[0].parts[1].image.width, 32);
  EXPECT_EQ(r.images, 1);
  EXPECT_FALSE(r.seed);
  EXPECT_EQ(r.n, 1);
  // JPEG and WebP uploads decode too; a GIF is refused with the accepted formats in the message
  auto fixture = [](const std::string& name) {
    std::ifstream f(std::string(OMNIFLUX_FIXTURES) + "/images/formats/" + name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  auto with_image = [&](const std::string& url) {
    json b = body;
    b["messages"][0]["content"][1]["image_url"]["url"] = url;
    return b;
  };
  for (const auto& [type, file, w] : std::vector<std::tuple<std::string, std::string, int>>{
           {"jpeg", "progressive_420.jpg", 48}, {"webp", "lossy.webp", 40}, {"webp", "lossless.webp", 40}}) {
    const ChatRequest rj = parse_chat(with_image("data:image/" + type + ";base64," + base64_encode(fixture(file))), c, l);
    ASSERT_EQ(rj.images, 1) << file;
    EXPECT_EQ(rj.turns[0].parts[1].image.width, w) << file;
  }
  const ApiError gif =
      error_of([&] { parse_chat(with_image("data:image/gif;base64," + base64_encode("GIF89a\x01\x00\x01\x00")), c, l); });
  EXPECT_EQ(gif.status, 400);
  EXPECT_EQ(gif.param, "messages[0].content[1].image_url.url");
  EXPECT_NE(gif.message.find("expected PNG, JPEG, WebP, got GIF"), std::string::npos) << gif.message;
  // UniWorld: plain string content, no image, app.py's default token budget
  r = parse_chat(json{{"model", "uniworld-v1"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}}, c, l);
  EXPECT_EQ(r.options.max_new_tokens, 128);
  EXPECT_EQ(r.images, 0);
  EXPECT_FALSE(r.options.temperature);  // no sampling field: the official greedy decoding

  auto err = [&](json j) { return error_of([&] { parse_chat(j, c, l); }); };
  auto msg = [](json content) { return json{{"model", "x-omni"}, {"messages", {{{"role", "user"}, {"content", content}}}}}; };
  const json text_part = {{"type", "text"}, {"text", "Q"}};
  EXPECT_EQ(err(json{{"model", "x-omni"}}).param, "messages");
  EXPECT_EQ(err(json{{"model", "x-omni"}, {"messages", json::array()}}).param, "messages");
  EXPECT_EQ(err(json{{"model", "x-omni"}, {"messages", "hi"}}).param, "messages");
  EXPECT_NO_THROW(parse_chat(msg(json::array({text_part})), c, l));  // X-Omni answers text-only turns
  const json img = {{"type", "image_url"}, {"image_url", {{"url", uri}}}};
  EXPECT_EQ(err(msg(json::array({text_part, img, img}))).param, "messages[0].content");  // chat.py: one image
  EXPECT_EQ(err(msg(json::array({text_part, {{"type", "image_url"}, {"image_url", {{"url", "https://x/y.png"}}}}}))).param,
            "messages[0].content[1].image_url.url");
  EXPECT_EQ(err(msg(json::array({text_part, {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,@@@@"}}}}})))
                .param,
            "messages[0].content[1].image_url.url");
  EXPECT_EQ(err(msg(json::array({text_part, {{"type", "image_url"}, {"image_url", {{"url", data_uri("not an image")}}}}})))
                .param,
            "messages[0].content[1].image_url.url");
  EXPECT_EQ(err(msg(json::array({{{"type", "audio"}}}))).param, "messages[0].content[0].type");
  EXPECT_EQ(err(msg(json::array({{{"type", "input_audio"}, {"input_audio", json::object()}}}))).param,
            "messages[0].content[0].type");
  EXPECT_EQ(err(msg(42)).param, "messages[0].content");
  json only_sys = msg("Q");
  only_sys["messages"][0]["role"] = "system";
  EXPECT_EQ(err(only_sys).param, "messages");  // the last message must be the user's
  json many = msg("Q");
  many["max_tokens"] = 100000;
  EXPECT_EQ(err(many).param, "max_tokens");
  json tools = msg("Q");
  tools["tools"] = json::array({{{"type", "function"}}});
  EXPECT_EQ(err(tools).param, "tools");
  json typo = msg("Q");
  typo["temprature"] = 0.5;
  EXPECT_EQ(err(typo).param, "temprature");
  json flux = msg("Q");
  flux["model"] = "flux.1-dev";
  EXPECT_EQ(err(flux).param, "model");
}

// What chat front-ends and SDKs send by default is accepted; what cannot be honoured is refused
// with the field named.
TEST(ServerApi, ChatConversationsAndTheWholeRequestSchema) {
  const Catalog c = test_catalog();
  Limits l;
  const std::string uri = data_uri(png_bytes(32, 32));
  json body = {{"model", "uniworld-v1"},
               {"messages",
                {{{"role", "developer"}, {"content", "Be brief."}},
                 {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "What is it?"}}, {{"type", "image_url"}, {"image_url", {{"url", uri}, {"detail", "low"}}}}}}},
                 {{"role", "assistant"}, {"content", "A square."}, {"refusal", nullptr}, {"tool_calls", json::array()}},
                 {{"role", "user"}, {"name", "ann"}, {"content", {{{"type", "text"}, {"text", "And "}}, {{"type", "text"}, {"text", "this?"}}, {{"type", "image_url"}, {"image_url", uri}}}}}}},
               {"temperature", 0.7}, {"top_p", 0.9}, {"n", 2}, {"seed", 7}, {"stop", {"\n\n", "END"}},
               {"presence_penalty", 0}, {"frequency_penalty", 0.5}, {"logit_bias", {{"17", -100}, {"5", 2.5}}},
               {"max_completion_tokens", 20}, {"stream", true}, {"stream_options", {{"include_usage", true}}},
               {"user", "u"}, {"store", false}, {"metadata", {{"k", "v"}}}, {"logprobs", false}, {"service_tier", "auto"},
               {"parallel_tool_calls", true}, {"tool_choice", "none"}, {"tools", json::array()},
               {"response_format", {{"type", "text"}}}, {"modalities", {"text"}}, {"top_k", 40}, {"min_p", 0.05},
               {"repetition_penalty", 1.1}, {"prompt_cache_key", "k"}, {"safety_identifier", "s"}, {"audio", nullptr}};
  ChatRequest r = parse_chat(body, c, l);
  ASSERT_EQ(r.turns.size(), 4u);
  EXPECT_EQ(r.turns[0].role, "system");  // developer is system
  EXPECT_EQ(r.turns[2].role, "assistant");
  EXPECT_EQ(r.turns[3].parts.size(), 3u);
  EXPECT_EQ(r.images, 2);
  EXPECT_EQ(*r.options.temperature, 0.7);
  EXPECT_EQ(*r.options.top_p, 0.9);
  EXPECT_EQ(*r.options.top_k, 40);
  EXPECT_EQ(*r.options.min_p, 0.05);
  EXPECT_EQ(*r.options.repetition_penalty, 1.1);
  EXPECT_EQ(r.options.frequency_penalty, 0.5);
  EXPECT_EQ(r.options.logit_bias, (std::vector<std::pair<int64_t, double>>{{17, -100.0}, {5, 2.5}}));
  EXPECT_EQ(r.options.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(r.options.max_new_tokens, 20);
  EXPECT_EQ(*r.seed, 7u);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.include_usage);

  auto err = [&](json j) { return error_of([&] { parse_chat(j, c, l); }); };
  auto with = [&](const char* k, json v) {
    json j = {{"model", "uniworld-v1"}, {"messages", {{{"role", "user"}, {"content", "Q"}}}}};
    j[k] = v;
    return j;
  };
  struct Case {
    json body;
    std::string param;
  };
  const std::vector<Case> refused = {
      {with("logprobs", true), "logprobs"},
      {with("top_logprobs", 3), "top_logprobs"},
      {with("n", 5), "n"},
      {with("temperature", 2.5), "temperature"},
      {with("presence_penalty", 3), "presence_penalty"},
      {with("stop", {"a", "b", "c", "d", "e"}), "stop"},
      {with("stop", ""), "stop"},
      {with("stop", 5), "stop"},
      {with("logit_bias", {{"1000", 1}}), "logit_bias"},  // outside the 1000-token vocabulary
      {with("logit_bias", {{"x", 1}}), "logit_bias"},
      {with("logit_bias", {{"3", 101}}), "logit_bias"},
      {with("response_format", {{"type", "json_object"}}), "response_format"},
      {with("tool_choice", "required"), "tool_choice"},
      {with("store", true), "store"},
      {with("modalities", {"text", "audio"}), "modalities"},
      {with("audio", {{"voice", "x"}}), "audio"},
      {with("service_tier", "flex"), "service_tier"},
      {with("reasoning_effort", "low"), "reasoning_effort"},
      {with("stream_options", {{"include_usage", true}}), "stream_options"},  // without stream
  };
  for (size_t i = 0; i < refused.size(); ++i) {
    const ApiError e = err(refused[i].body);
    EXPECT_EQ(e.status, 400) << refused[i].body.dump();
    EXPECT_EQ(e.param, refused[i].param) << refused[i].body.dump();
  }
  auto conv = [&](json messages) { return json{{"model", "uniworld-v1"}, {"messages", messages}}; };
  const json user = {{"role", "user"}, {"content", "Q"}};
  EXPECT_EQ(err(conv({user, {{"role", "system"}, {"content", "late"}}, user})).param, "messages[1].role");
  EXPECT_EQ(err(conv({{{"role", "tool"}, {"content", "x"}, {"tool_call_id", "1"}}, user})).param, "messages[0].role");
  EXPECT_EQ(err(conv({user, {{"role", "assistant"}, {"content", "x"}, {"tool_calls", {{{"id", "1"}}}}}, user})).param,
            "messages[1].tool_calls");
  EXPECT_EQ(err(conv({user, {{"role", "assistant"}, {"content", "x"}}})).param, "messages");  // the user's turn is last
  EXPECT_EQ(err(conv({{{"role", "assistant"}, {"content", {{{"type", "image_url"}, {"image_url", uri}}}}}, user})).param,
            "messages[0].content[0]");
  const json five_images = {{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", uri}}, {{"type", "image_url"}, {"image_url", uri}}, {{"type", "image_url"}, {"image_url", uri}}}}};
  EXPECT_EQ(err(conv({five_images, {{"role", "assistant"}, {"content", "ok"}}, five_images})).param, "messages[2].content");
  // greedy when asked: temperature 0
  EXPECT_EQ(*parse_chat(with("temperature", 0), c, l).options.temperature, 0.0);
}

TEST(ServerApi, Base64AndDataUris) {
  for (const std::string s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\0\xff\x10", 3)})
    EXPECT_EQ(*base64_decode(base64_encode(s)), s);
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");  // RFC 4648 §10
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  for (const std::string bad : {"Zm9", "Zm9v!A==", "Zg=a", "Z===", "Zm 9v", "=Zm9"}) EXPECT_FALSE(base64_decode(bad)) << bad;
  Limits l;
  EXPECT_EQ(decode_data_uri("data:image/png;base64,Zm9v", "p", l), "foo");
  EXPECT_EQ(error_of([&] { decode_data_uri("data:text/plain;base64,Zm9v", "p", l); }).param, "p");
  EXPECT_EQ(error_of([&] { decode_data_uri("data:image/png,raw", "p", l); }).status, 400);
  l.max_image_bytes = 10;
  EXPECT_EQ(error_of([&] { decode_data_uri("data:image/png;base64," + base64_encode(std::string(30, 'x')), "p", l); }).status,
            413);
}

TEST(ServerApi, ResponseShapesFollowOpenAI) {
  GeneratedImage g;
  g.png = {1, 2, 3};
  g.width = 64;
  g.height = 48;
  g.seed = 9;
  json r = images_response({g}, 1700000000);
  EXPECT_EQ(r["created"], 1700000000);
  EXPECT_EQ(r["data"][0]["b64_json"], "AQID");
  EXPECT_EQ(r["size"], "64x48");
  r = images_response({g}, 1700000000, ImageUsage{5, 3, 7});
  EXPECT_EQ(r["usage"], json({{"input_tokens", 8},
                              {"input_tokens_details", {{"text_tokens", 5}, {"image_tokens", 3}}},
                              {"output_tokens", 7},
                              {"total_tokens", 15}}));
  json chunk = chat_chunk("id1", "x-omni", 5, 1, {{"content", "hi"}});
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["index"], 1);
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "hi");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(chunk.contains("usage"));
  EXPECT_TRUE(chat_chunk("id1", "x-omni", 5, 0, {{"content", "hi"}}, nullptr, true)["usage"].is_null());
  EXPECT_EQ(chat_chunk("id1", "x-omni", 5, 0, json::object(), "length")["choices"][0]["finish_reason"], "length");
  ChatResult result{{{"answer", "stop"}, {"other", "length"}}, 11, 7};
  json full = chat_response("id1", "x-omni", 5, result);
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "answer");
  EXPECT_EQ(full["choices"][1]["index"], 1);
  EXPECT_EQ(full["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(full["usage"], json({{"prompt_tokens", 11}, {"completion_tokens", 7}, {"total_tokens", 18}}));
  EXPECT_EQ(full["system_fingerprint"].get<std::string>().rfind("omniflux-", 0), 0u);
  json last = chat_usage_chunk("id1", "x-omni", 5, result);
  EXPECT_TRUE(last["choices"].empty());
  EXPECT_EQ(last["usage"]["total_tokens"], 18);
  json models = models_response(test_catalog());
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"].size(), 3u);
  EXPECT_EQ(models["data"][0]["id"], "uniworld-v1");
  EXPECT_EQ(models["data"][0]["defaults"]["seed"], 42);
  ApiError e(429, "busy", "", "queue_full");
  EXPECT_EQ(e.body()["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(e.body()["error"]["param"].is_null());
  // invalid UTF-8 in a message does not throw on the way out
  EXPECT_NE(dump(ApiError(400, "bad \xff byte").body()).find("bad"), std::string::npos);
}

TEST(ServerApi, SseFraming) {
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_event(json{{"a", "x\ny"}}, "e"), "event: e\ndata: {\"a\":\"x\\ny\"}\n\n");  // one data line
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  EXPECT_EQ(sse_comment("a\nb"), ": a b\n\n");
}

// ---- the job queue --------------------------------------------------------------------------------

namespace {
// Takes events until Finished (bounded: a job that never finishes fails the test).
JobEvent drain(Job& j, std::vector<JobEvent>* seen = nullptr) {
  for (int i = 0; i < 400; ++i) {
    auto e = j.next(std::chrono::milliseconds(50));
    if (!e) continue;
    if (e->kind == JobEvent::Kind::Finished) return *e;
    if (seen) seen->push_back(*e);
  }
  ADD_FAILURE() << "job did not finish";
  return {};
}
}  // namespace

TEST(ServerJobs, RunsInOrderAndBoundsTheQueue) {
  JobQueue q(2);
  std::atomic<bool> release{false};
  std::vector<int> order;
  std::mutex m;
  auto make = [&](int id, bool block) {
    return std::make_shared<Job>([&, id, block](Job& j) {
      while (block && !release) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::lock_guard<std::mutex> lock(m);
      order.push_back(id);
      j.set_answer(ChatResult{{{std::to_string(id), "stop"}}, 0, 0});
    });
  };
  std::thread worker([&] { q.run(); });
  auto a = make(1, true), b = make(2, false), c = make(3, false), d = make(4, false);
  EXPECT_EQ(q.submit(a), JobQueue::Admit::Accepted);
  for (int i = 0; i < 200 && !q.stats().running; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(q.stats().running);
  EXPECT_EQ(q.submit(b), JobQueue::Admit::Accepted);
  EXPECT_EQ(q.submit(c), JobQueue::Admit::Accepted);
  EXPECT_EQ(q.submit(d), JobQueue::Admit::Full);  // 1 running + 2 waiting
  EXPECT_GE(q.retry_after_seconds(), 1);
  release = true;
  EXPECT_EQ(drain(*a).chat.choices.at(0).text, "1");
  EXPECT_EQ(drain(*b).chat.choices.at(0).text, "2");
  EXPECT_EQ(drain(*c).chat.choices.at(0).text, "3");
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(q.stats().completed, 3u);
  q.shutdown();
  worker.join();
  EXPECT_EQ(q.submit(d), JobQueue::Admit::Closed);
}

TEST(ServerJobs, CancelWaitingAndRunningJobs) {
  JobQueue q(4);
  std::thread worker([&] { q.run(); });
  std::atomic<int> steps{0};
  // a "denoising loop" that stops when its progress callback says so
  auto running = std::make_shared<Job>([&](Job& j) {
    for (int s = 0; s < 100000; ++s) {
      if (!j.progress(0, "denoise", s, 100000)) return;
      ++steps;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  auto waiting = std::make_shared<Job>([](Job& j) { j.set_answer(ChatResult{{{"never", "stop"}}, 0, 0}); });
  ASSERT_EQ(q.submit(running), JobQueue::Admit::Accepted);
  while (steps < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(q.submit(waiting), JobQueue::Admit::Accepted);
  q.cancel(waiting);
  EXPECT_EQ(drain(*waiting).end, JobEvent::End::Cancelled);
  EXPECT_EQ(q.stats().waiting, 0u);
  while (steps < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  q.cancel(running);
  std::vector<JobEvent> seen;
  EXPECT_EQ(drain(*running, &seen).end, JobEvent::End::Cancelled);
  EXPECT_LT(steps.load(), 1000);
  ASSERT_FALSE(seen.empty());
  // progress of one stage is merged: never more events than steps taken
  EXPECT_LE(seen.size(), static_cast<size_t>(steps.load()) + 1);
  // a token loop stops when Job::text says the job is cancelled (the library's stream callbacks
  // return that false; nothing throws through the library)
  auto tokens = std::make_shared<Job>([&](Job& j) {
    while (j.text(0, "t")) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  ASSERT_EQ(q.submit(tokens), JobQueue::Admit::Accepted);
  auto first = tokens->next(std::chrono::seconds(5));
  ASSERT_TRUE(first && first->kind == JobEvent::Kind::Text);
  q.cancel(tokens);
  EXPECT_EQ(drain(*tokens).end, JobEvent::End::Cancelled);
  q.shutdown();
  worker.join();
}

TEST(ServerJobs, ErrorsBecomeApiErrorsAndShutdownRefusesWaiting) {
  JobQueue q(4);
  std::thread worker([&] { q.run(); });
  auto model_error = std::make_shared<Job>([](Job&) { throw Error("image too small", "X-Omni"); });
  auto api_error = std::make_shared<Job>([](Job&) { throw ApiError(400, "too big", "size"); });
  ASSERT_EQ(q.submit(model_error), JobQueue::Admit::Accepted);
  ASSERT_EQ(q.submit(api_error), JobQueue::Admit::Accepted);
  JobEvent e = drain(*model_error);
  ASSERT_TRUE(e.error);
  EXPECT_EQ(e.error->status, 422);
  e = drain(*api_error);
  ASSERT_TRUE(e.error);
  EXPECT_EQ(e.error->param, "size");
  // memory running out while a request runs: 503 for it, and the queue goes on
  auto oom = std::make_shared<Job>([](Job&) { throw std::bad_alloc(); });
  auto after = std::make_shared<Job>([](Job& j) { j.set_answer(ChatResult{{{"fine", "stop"}}, 0, 0}); });
  ASSERT_EQ(q.submit(oom), JobQueue::Admit::Accepted);
  ASSERT_EQ(q.submit(after), JobQueue::Admit::Accepted);
  e = drain(*oom);
  ASSERT_TRUE(e.error);
  EXPECT_EQ(e.error->status, 503);
  EXPECT_EQ(e.error->code, "out_of_memory");
  EXPECT_EQ(drain(*after).chat.choices.at(0).text, "fine");
  std::atomic<bool> started{false};
  auto running = std::make_shared<Job>([&](Job& j) {
    started = true;
    while (j.progress(0, "denoise", 0, 1)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  auto queued = std::make_shared<Job>([](Job&) {});
  ASSERT_EQ(q.submit(running), JobQueue::Admit::Accepted);
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(q.submit(queued), JobQueue::Admit::Accepted);
  q.shutdown();
  EXPECT_EQ(drain(*running).end, JobEvent::End::Cancelled);
  e = drain(*queued);
  EXPECT_EQ(e.end, JobEvent::End::Failed);
  EXPECT_EQ(e.error->status, 503);
  worker.join();
}
