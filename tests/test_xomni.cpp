// X-Omni end to end on the tiny folders written by omniflux-tiny (x-omni and flux.1-dev): text to
// PNG through the CLI and the library, codes round trip through codes.json, chat, reproducibility,
// LM CFG on and off, a non-square size; the prompt ids, the code count, the sampling on the image
// slice, the generation-config merge, mmdecode, the feature injection; bad inputs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/pipelines/xomni.h"
#include "text/chat_template.h"
#include "omniflux/text/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace omniflux;

namespace {

const fs::path& tiny_root() { return tiny_folders(5, {"flux_1_dev", "x_omni"}); }
std::string xomni_dir() { return (tiny_root() / "x-omni").string(); }
std::string flux_dir() { return (tiny_root() / "flux.1-dev").string(); }

const XOmniPipeline& pipe() {
  static XOmniPipeline p = XOmniPipeline::load(xomni_dir(), flux_dir());
  return p;
}

// A copy of the tiny X-Omni folder whose big safetensors files (found by fixed names) are symlinks,
// cheap to edit the rest. The ViT and projector files named by vision_config are copied: a config
// path that a symlink leads out of the folder is refused.
fs::path linked_copy(const TempDir& d) {
  const fs::path dst = d.path() / "x-omni";
  fs::create_directories(dst);
  for (const auto& e : fs::recursive_directory_iterator(xomni_dir())) {
    const fs::path rel = fs::relative(e.path(), xomni_dir());
    if (e.is_directory()) fs::create_directories(dst / rel);
    else if (rel == "model.safetensors" || rel.parent_path() == "diffusers") fs::create_symlink(e.path(), dst / rel);
    else fs::copy_file(e.path(), dst / rel);
  }
  return dst;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}
void write_json(const fs::path& p, const nlohmann::json& j) {
  fs::remove(p);
  std::ofstream(p) << j.dump();
}

Image test_image(int w, int h) {
  Image img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = static_cast<uint8_t>((i * 37) % 251);
  return img;
}

XOmniOptions small(const std::string& prompt, int64_t w = 64, int64_t h = 48, uint64_t seed = 5) {
  XOmniOptions o;
  o.prompt = prompt;
  o.width = w;
  o.height = h;
  o.seed = seed;
  o.decoder.seed = seed;
  return o;
}

}  // namespace

// ---- end to end ----------------------------------------------------------------------------------

TEST(XOmniEndToEnd, TinyFolderHasTheOfficialLayout) {
  const fs::path d = xomni_dir();
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors",
                        "siglip_vit.safetensors", "vq_projector.safetensors", "diffusers/config.json",
                        "diffusers/diffusion_pytorch_model.safetensors"})
    EXPECT_TRUE(fs::is_regular_file(d / f)) << f;
  const auto& p = pipe();
  EXPECT_EQ(p.decoder().injection_layout().prefix, "siglip_embedder");
  EXPECT_FALSE(p.decoder().injection_layout().bias);
  const int64_t V = p.lm().config().text.vocab_size;
  EXPECT_EQ(p.tokenizer().token_to_id("<MM-Token-0>"), std::optional<int64_t>(V));
  EXPECT_EQ(p.tokenizer().token_to_id("<MM-Token-63>"), std::optional<int64_t>(V + 63));
  EXPECT_GT(p.lm().config().num_mm_adap_layers, 0);
  EXPECT_GT(p.lm().config().num_mm_head_layers, 0);
}

TEST(XOmniEndToEnd, CliGeneratesPngAndCodesReproducibly) {
  TempDir out;
  auto run = [&](const std::string& name, const std::string& extra) {
    const std::string cmd = bin("omniflux-xomni") + " generate --model " + xomni_dir() + " --flux " + flux_dir() +
                            " -p 'a red cube on a table' -W 64 -H 48 --seed 7 --quiet --codes-out " +
                            (out.path() / (name + ".json")).string() + " -o " + (out.path() / (name + ".png")).string() +
                            " " + extra;
    return std::system(cmd.c_str());
  };
  ASSERT_EQ(run("a", ""), 0);
  ASSERT_EQ(run("b", ""), 0);
  Image img = load_image((out.path() / "a.png").string());
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 48);
  EXPECT_EQ(read_bytes(out.path() / "a.png"), read_bytes(out.path() / "b.png"));
  EXPECT_EQ(read_bytes(out.path() / "a.json"), read_bytes(out.path() / "b.json"));
  auto j = read_json(out.path() / "a.json");
  EXPECT_EQ(j["rows"], 3);
  EXPECT_EQ(j["cols"], 4);
  EXPECT_EQ(j["codes"].size(), 12u);
  EXPECT_EQ(j["prompt"], "a red cube on a table");
  auto text = read_png_text((out.path() / "a.png").string());
  ASSERT_EQ(text.size(), 1u);
  EXPECT_NE(text[0].second.find("a red cube"), std::string::npos);
  // decode from the codes file gives the same image (same decoder seed)
  const std::string dec = bin("omniflux-xomni") + " decode --model " + xomni_dir() + " --flux " + flux_dir() +
                          " --codes " + (out.path() / "a.json").string() + " --seed 7 --quiet -o " +
                          (out.path() / "d.png").string();
  ASSERT_EQ(std::system(dec.c_str()), 0);
  EXPECT_EQ(load_image((out.path() / "d.png").string()).rgb, img.rgb);
  // LM CFG on
  ASSERT_EQ(run("c", "--cfg 3.0"), 0);
  EXPECT_EQ(read_json(out.path() / "c.json")["codes"].size(), 12u);
  // bad size: not a multiple of 16, rejected before loading
  EXPECT_NE(run("e", "-W 50"), 0);
}

TEST(XOmniEndToEnd, SameSeedSameCodesAndImage) {
  const auto& p = pipe();
  auto o = small("a small house");
  XOmniCodes a = *p.generate_codes(o), b = *p.generate_codes(o);
  EXPECT_EQ(a.codes, b.codes);
  auto ia = p.decode_codes(a, o.decoder), ib = p.decode_codes(b, o.decoder);
  ASSERT_TRUE(ia && ib);
  EXPECT_EQ(ia->rgb, ib->rgb);
  // another seed gives other codes (12 draws over 64 codes)
  XOmniCodes c = *p.generate_codes(small("a small house", 64, 48, 6));
  EXPECT_NE(a.codes, c.codes);
}

TEST(XOmniEndToEnd, CfgOnAndOffGiveFullCodeGrids) {
  const auto& p = pipe();
  auto o = small("a dog");
  XOmniCodes off = *p.generate_codes(o);
  o.cfg_scale = 4.0;
  XOmniCodes on1 = *p.generate_codes(o), on2 = *p.generate_codes(o);
  for (const auto* c : {&off, &on1}) {
    ASSERT_EQ(c->codes.size(), 12u);
    for (int64_t k : c->codes) EXPECT_TRUE(k >= 0 && k < 64) << k;
  }
  EXPECT_EQ(on1.codes, on2.codes);
  EXPECT_NE(off.codes, on1.codes) << "guidance should change the sampled codes";
  auto img = p.decode_codes(on1, o.decoder);
  ASSERT_TRUE(img);
  EXPECT_EQ(img->width, 64);
}

TEST(XOmniEndToEnd, NegativePromptIsTheCfgRow) {
  const auto& p = pipe();
  // "" keeps generate.py's bare prefix; other text comes before it, encoded as the prompt row is
  const XOmniPrompt plain = p.t2i_prompt("a dog", 64, 48), neg = p.t2i_prompt("a dog", 64, 48, "blurry");
  EXPECT_TRUE(at::equal(plain.ids, neg.ids));
  EXPECT_FALSE(at::equal(plain.negative_ids, neg.negative_ids));
  EXPECT_TRUE(at::equal(neg.negative_ids, p.t2i_prompt("blurry", 64, 48).ids));
  auto o = small("a dog");
  o.cfg_scale = 4.0;
  const XOmniCodes base = p.generate_codes(o).value();
  o.negative_prompt = "blurry";
  EXPECT_NE(p.generate_codes(o)->codes, base.codes);
  // without guidance the CFG row is never run
  o.cfg_scale = 1.0;
  auto none = small("a dog");
  EXPECT_EQ(p.generate_codes(o)->codes, p.generate_codes(none)->codes);
}

TEST(XOmniEndToEnd, NonSquareResolution) {
  const auto& p = pipe();
  int64_t last = -1, total = 0;
  auto o = small("a wide landscape", 96, 32);
  XOmniCodes c = *p.generate_codes(o, [&](const std::string& stage, int64_t done, int64_t t) {
    EXPECT_EQ(stage, "tokens");
    EXPECT_GT(done, last);
    last = done;
    total = t;
    return true;
  });
  EXPECT_EQ(c.rows, 2);
  EXPECT_EQ(c.cols, 6);
  EXPECT_EQ(c.codes.size(), 12u);
  EXPECT_EQ(last, 12);
  EXPECT_EQ(total, 12);
  auto img = p.generate(o);
  ASSERT_TRUE(img);
  EXPECT_EQ(img->width, 96);
  EXPECT_EQ(img->height, 32);
}

TEST(XOmniEndToEnd, DecoderGuidanceScalesChangeTheImage) {
  const auto& p = pipe();
  auto o = small("a tree");
  XOmniCodes c = *p.generate_codes(o);
  XOmniDecodeOptions plain = o.decoder, text_only = o.decoder, both = o.decoder;
  plain.cfg_scale = 1.0, plain.cfg_scale_2 = 1.0;          // one prediction
  text_only.cfg_scale = 3.0, text_only.cfg_scale_2 = 1.0;  // c and n
  both.cfg_scale = 3.0, both.cfg_scale_2 = 2.0;            // c, n and u
  auto a = p.decode_codes(c, plain), b = p.decode_codes(c, text_only), d = p.decode_codes(c, both);
  ASSERT_TRUE(a && b && d);
  EXPECT_NE(a->rgb, b->rgb);
  EXPECT_NE(b->rgb, d->rgb);
  // cancel from the progress callback
  auto cancelled = p.decode_codes(c, plain, [](const std::string& stage, int64_t, int64_t) { return stage != "denoise"; });
  EXPECT_FALSE(cancelled);
}

TEST(XOmniEndToEnd, ChatAnswersAndStreams) {
  const auto& p = pipe();
  std::string streamed;
  const Image img = test_image(80, 64);
  const std::string answer = *p.chat(img, "What is in the picture?", [&](const std::string& s) {
    streamed += s;
    return true;
  }, 12);
  EXPECT_EQ(streamed.substr(0, answer.size()), answer);
  EXPECT_EQ(p.chat(img, "What is in the picture?", {}, 12), answer);
  // the image enters as <SOM>h w<IMAGE> + h*w codes + <EOM>: 80x64 -> anyres 80x64 (short side
  // 64 = short_size) -> a 4 x 5 grid
  XOmniCodes codes = p.tokenize_image(img);
  EXPECT_EQ(codes.rows, 4);
  EXPECT_EQ(codes.cols, 5);
  at::Tensor ids = p.chat_prompt(codes, "Q?");
  const int64_t V = p.lm().config().text.vocab_size;
  EXPECT_EQ(at::logical_and(ids >= V, ids < V + 64).sum().item<int64_t>(), 20);
  // through the CLI
  TempDir out;
  save_png((out.path() / "in.png").string(), img, {});
  const std::string cmd = bin("omniflux-xomni") + " chat --model " + xomni_dir() + " -i " +
                          (out.path() / "in.png").string() + " -p 'What is in the picture?' --max-new-tokens 12 --quiet" +
                          // the library's thread count: a reduction split differently could change a token
                          " --threads " + std::to_string(at::get_num_threads()) + " > " +
                          (out.path() / "answer.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(read_bytes(out.path() / "answer.txt"), streamed + "\n");
}

TEST(XOmniEndToEnd, GenerateAndChatCancelWithinOneToken) {
  const auto& p = pipe();
  auto o = small("a red cube");
  int64_t calls = 0;
  std::string stage_seen;
  auto stop_at = [&](int64_t n) {
    return [&calls, &stage_seen, n](const std::string& stage, int64_t done, int64_t) {
      ++calls;
      stage_seen = stage;
      return done < n;
    };
  };
  EXPECT_FALSE(p.generate_codes(o, stop_at(5)));
  EXPECT_EQ(calls, 5);  // not called again after it said stop
  calls = 0;
  EXPECT_FALSE(p.generate(o, stop_at(2)));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(stage_seen, "tokens");
  // chat: the full answer's token count, then a cancel after the second token
  const Image img = test_image(80, 64);
  std::string full_text, part_text;
  int64_t full = 0;
  auto answer = p.chat(img, "What is in the picture?", [&](const std::string& s) { full_text += s; return true; }, 12,
                       [&](const std::string& stage, int64_t done, int64_t total) {
                         EXPECT_EQ(stage, "answer");
                         EXPECT_EQ(total, 12);
                         full = done;
                         return true;
                       });
  ASSERT_TRUE(answer);
  ASSERT_GE(full, 3) << "the tiny model's answer is too short to cancel in the middle";
  calls = 0;
  EXPECT_FALSE(p.chat(img, "What is in the picture?", [&](const std::string& s) { part_text += s; return true; }, 12, stop_at(2)));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(stage_seen, "answer");
  EXPECT_EQ(full_text.substr(0, part_text.size()), part_text);
  EXPECT_LT(part_text.size(), full_text.size());
}

namespace {
// Runs omniflux-xomni with `args` (no shell); returns the exit status (-1 for a signal) and stderr.
int run_xomni(const std::vector<std::string>& args, std::string* err = nullptr) {
  std::vector<std::string> all = {bin("omniflux-xomni")};
  all.insert(all.end(), args.begin(), args.end());
  Child c(all);
  const int st = c.wait();
  if (err) *err = c.err();
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST(XOmniEndToEnd, CliRefusesBadCommandLinesBeforeLoading) {
  TempDir out;
  const std::string m = xomni_dir(), f = flux_dir(), png = (out.path() / "x.png").string();
  save_png((out.path() / "in.png").string(), test_image(80, 64), {});
  std::string err;
  // generate does not use an image: an error, not silence
  EXPECT_EQ(run_xomni({"generate", "-m", m, "--flux", f, "-p", "a", "-i", (out.path() / "in.png").string()}, &err), 2);
  EXPECT_TRUE(has(err, "-i/--image")) << err;
  // a second -i to chat
  EXPECT_EQ(run_xomni({"chat", "-m", m, "-p", "q", "-i", "a.png", "-i", "b.png"}, &err), 2);
  EXPECT_TRUE(has(err, "more than once")) << err;
  EXPECT_EQ(run_xomni({"generate", "-m", m, "--flux", f}, &err), 2);
  EXPECT_TRUE(has(err, "missing -p/--prompt")) << err;
  EXPECT_EQ(run_xomni({"generate", "-m", m, "--flux", f, "-p", "a", "--seed", "18446744073709551616"}, &err), 2);
  EXPECT_TRUE(has(err, "--seed")) << err;
  EXPECT_EQ(run_xomni({"generate", "-m", m, "--flux", f, "-p", "a", "--threads", "4294967297"}, &err), 2);
  EXPECT_TRUE(has(err, "--threads")) << err;
  EXPECT_EQ(run_xomni({"generate", "-m", m, "--flux", f, "-p", "a", "--decoder-steps", "0", "-o", png}, &err), 2);
  EXPECT_TRUE(has(err, "--decoder-steps")) << err;
  EXPECT_EQ(run_xomni({"chat", "-m", m, "-p", "q", "-i", (out.path() / "in.png").string(), "--max-new-tokens",
                       "1000000000"}, &err), 2);
  EXPECT_TRUE(has(err, "--max-new-tokens")) << err;
  EXPECT_EQ(run_xomni({"generate", "-m", m, "-p", "a", "--codes-only"}, &err), 2);  // codes to nowhere
  EXPECT_TRUE(has(err, "--codes-out")) << err;
  // an output folder that does not exist: found before loading ("loaded" never printed)
  EXPECT_EQ(run_xomni({"generate", "-m", m, "--flux", f, "-p", "a", "-W", "64", "-H", "48", "-o",
                       (out.path() / "none" / "x.png").string()}, &err), 1);
  EXPECT_TRUE(has(err, "does not exist")) << err;
  EXPECT_FALSE(has(err, "loaded")) << err;
  // a FIFO as the chat image is refused, not read forever
  ASSERT_EQ(mkfifo((out.path() / "fifo.png").c_str(), 0600), 0);
  EXPECT_EQ(run_xomni({"chat", "-m", m, "-p", "q", "-i", (out.path() / "fifo.png").string()}, &err), 1);
  EXPECT_TRUE(has(err, "FIFO")) << err;
  EXPECT_FALSE(fs::exists(png));
}

TEST(XOmniEndToEnd, CliReportsFailedWrites) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  std::string err;
  EXPECT_EQ(run_xomni({"generate", "-m", xomni_dir(), "-p", "a", "-W", "16", "-H", "16", "--codes-only", "--codes-out",
                       "/dev/full", "--quiet"}, &err), 1);
  EXPECT_TRUE(has(err, "/dev/full")) << err;
}

TEST(XOmniEndToEnd, CliCtrlCStopsTheCodePhaseAndWritesNothing) {
  TempDir out;
  const fs::path codes = out.path() / "codes.json", png = out.path() / "x.png";
  // 512 x 512: 1024 codes, far more than run between the first progress line and the signal
  for (bool codes_only : {true, false}) {
    std::vector<std::string> args = {bin("omniflux-xomni"), "generate", "-m", xomni_dir(), "-p", "a red cube",
                                     "-W", "512", "-H", "512", "--codes-out", codes.string()};
    if (codes_only) {
      args.push_back("--codes-only");
    } else {
      args.insert(args.end(), {"--flux", flux_dir(), "-o", png.string()});
    }
    Child c(args);
    ASSERT_TRUE(c.wait_for_stderr("/1024 codes")) << c.err();
    c.signal(SIGINT);
    const int st = c.wait();
    ASSERT_TRUE(WIFEXITED(st)) << c.err();
    EXPECT_EQ(WEXITSTATUS(st), 130) << c.err();
    EXPECT_TRUE(has(c.err(), "cancelled")) << c.err();
    EXPECT_FALSE(has(c.err(), "1024/1024")) << c.err();
    EXPECT_FALSE(fs::exists(codes));
    EXPECT_FALSE(fs::exists(png));
  }
  // No stray temporary files either.
  EXPECT_TRUE(fs::is_empty(out.path()));
}

TEST(XOmniEndToEnd, CliCtrlCStopsChat) {
  TempDir out;
  save_png((out.path() / "in.png").string(), test_image(80, 64), {});
  Child c({bin("omniflux-xomni"), "chat", "-m", xomni_dir(), "-i", (out.path() / "in.png").string(), "-p",
           "What is in the picture?", "--max-new-tokens", "3000"});
  ASSERT_TRUE(c.wait_until([&] { return !c.out().empty(); }, 600)) << c.err();  // the answer is streaming
  c.signal(SIGINT);
  const int st = c.wait();
  ASSERT_TRUE(WIFEXITED(st)) << c.err();
  EXPECT_EQ(WEXITSTATUS(st), 130) << c.err();
  EXPECT_TRUE(has(c.err(), "cancelled")) << c.err();
}

TEST(XOmniEndToEnd, CliSavesTheCodesWhenDecodingFails) {
  TempDir out;
  const fs::path png = out.path() / "x.png";
  Child c({bin("omniflux-xomni"), "generate", "-m", xomni_dir(), "--flux", flux_dir(), "-p", "a red cube", "-W", "64",
           "-H", "48", "--decoder-steps", "1", "-o", png.string()});
  ASSERT_TRUE(c.wait_for_stderr(" codes")) << c.err();
  fs::create_directories(png);  // the PNG cannot be written now: a folder took its name
  const int st = c.wait();
  ASSERT_TRUE(WIFEXITED(st)) << c.err();
  EXPECT_EQ(WEXITSTATUS(st), 1) << c.err();
  const fs::path saved = out.path() / "x.codes.json";
  EXPECT_TRUE(has(c.err(), saved.string())) << c.err();
  ASSERT_TRUE(fs::is_regular_file(saved)) << c.err();
  auto j = read_json(saved);
  EXPECT_EQ(j["rows"], 3);
  EXPECT_EQ(j["cols"], 4);
  EXPECT_EQ(j["codes"].size(), 12u);
}

// ---- units ----------------------------------------------------------------------------------------

TEST(XOmniUnits, PromptAndPrefixIds) {
  const auto& p = pipe();
  XOmniPrompt t = p.t2i_prompt("a red cube", 64, 48);
  EXPECT_EQ(t.rows, 3);
  EXPECT_EQ(t.cols, 4);
  // Qwen2 ids: digits '0'..'9' are 15..24, ' ' is 220; <SOM> <EOM> <IMAGE> follow the Qwen2 tokens.
  const std::vector<int64_t> prefix = {151665, 18, 220, 19, 151667};
  std::vector<int64_t> neg(t.negative_ids.data_ptr<int64_t>(), t.negative_ids.data_ptr<int64_t>() + t.negative_ids.numel());
  EXPECT_EQ(neg, prefix);
  std::vector<int64_t> want = text::load_tokenizer(fixture("tokenizers/qwen2/tokenizer.json"))->encode("a red cube");
  want.insert(want.end(), prefix.begin(), prefix.end());
  std::vector<int64_t> ids(t.ids.data_ptr<int64_t>(), t.ids.data_ptr<int64_t>() + t.ids.numel());
  EXPECT_EQ(ids, want);
  // the default size is 1152 x 1152: 72 x 72 = 5184 codes
  XOmniOptions d;
  EXPECT_EQ(d.width, 1152);
  EXPECT_EQ(d.height, 1152);
  EXPECT_NO_THROW(xomni_check_size(d.width, d.height));
  EXPECT_EQ((d.width / 16) * (d.height / 16), 5184);
  // the tiny LM's context (max_position_embeddings 4096) cannot hold 5184 codes
  EXPECT_THROW(p.t2i_prompt("x", d.width, d.height), Error);
}

TEST(XOmniUnits, SamplingDefaultsAndSuppressedIds) {
  const auto& p = pipe();
  XOmniOptions o;
  auto s = p.effective_sampling(o);
  EXPECT_TRUE(s.do_sample);
  EXPECT_EQ(s.temperature, 1.0);
  EXPECT_EQ(s.top_k, 50);
  EXPECT_EQ(s.top_p, 1.0);
  EXPECT_DOUBLE_EQ(s.min_p, 0.03);
  EXPECT_EQ(s.seed, 1234u);
  EXPECT_EQ(s.suppress_tokens, (std::vector<int64_t>{151665, 151666, 151667}));
}

TEST(XOmniUnits, GenerationConfigMergeFollowsTransformers) {
  auto gc = Config::parse(R"({"transformers_version": "4.51.3", "temperature": 0.7, "top_k": 20, "top_p": 0.8,
                              "repetition_penalty": 1.05, "min_p": 0.1})", "generation_config.json");
  sampling::SamplingOptions user = xomni_sampling_defaults();
  auto m = xomni_merge_generation_config(user, &gc);
  EXPECT_EQ(m.temperature, 0.7);  // the user's 1.0 equals the library default
  EXPECT_EQ(m.top_k, 20);
  EXPECT_EQ(m.top_p, 0.8);
  EXPECT_EQ(m.repetition_penalty, 1.05);
  EXPECT_DOUBLE_EQ(m.min_p, 0.03);  // set by generate.py: kept
  user.temperature = 0.9;
  EXPECT_EQ(xomni_merge_generation_config(user, &gc).temperature, 0.9);
  auto old = Config::parse(R"({"transformers_version": "4.49.0", "top_k": 20})", "generation_config.json");
  EXPECT_EQ(xomni_merge_generation_config(xomni_sampling_defaults(), &old).top_k, 50);
  EXPECT_EQ(xomni_merge_generation_config(xomni_sampling_defaults(), nullptr).top_k, 50);
}

TEST(XOmniUnits, ImageModeSamplesOnlyImageCodesAndWarpsThatSlice) {
  const auto& p = pipe();
  const auto& lm = p.lm();
  const int64_t V = lm.config().text.vocab_size, K = lm.config().image_vocab_size;
  XOmniPrompt t = p.t2i_prompt("a cat", 64, 48);
  auto cache = lm.new_cache(1, t.ids.size(1) + 1);
  at::Tensor logits = lm.prefill(t.ids, cache, XOmniMode::Image);
  EXPECT_EQ(logits.size(-1), K) << "image mode scores only the image codes; text ids are unreachable";
  EXPECT_EQ(lm.token_offset(XOmniMode::Image), V);
  // top_k = 1 and min_p = 1 keep only the most likely code of the slice: both equal greedy.
  auto o = small("a cat");
  o.sampling.do_sample = false;
  const auto greedy = p.generate_codes(o)->codes;
  o.sampling = xomni_sampling_defaults();
  o.sampling.top_k = 1;
  EXPECT_EQ(p.generate_codes(o)->codes, greedy);
  o.sampling.top_k = 50;
  o.sampling.min_p = 1.0;
  EXPECT_EQ(p.generate_codes(o)->codes, greedy);
  // with k = K every code stays reachable; the draw is still in [0, K)
  o.sampling.min_p = 0.0;
  o.sampling.top_k = 0;
  const auto drawn = p.generate_codes(o);  // kept: a range-for over ->codes of a temporary would dangle
  ASSERT_TRUE(drawn);
  for (int64_t k : drawn->codes) EXPECT_TRUE(k >= 0 && k < K);
}

TEST(XOmniUnits, MmdecodeSplitsTextAndImages) {
  const auto& p = pipe();
  XOmniCodes c;
  c.rows = 2, c.cols = 3, c.codes = {0, 5, 63, 12, 1, 7};
  auto ids = p.tokenizer().encode("a cat" + p.image_text(c));
  ids.pop_back();  // generate output ends with the codes; mmdecode appends <EOM>
  XOmniMMDecoded d = p.mmdecode(ids);
  ASSERT_EQ(d.images.size(), 1u);
  EXPECT_EQ(d.texts.front(), "a cat");
  EXPECT_EQ(d.images[0].codes, c.codes);
  EXPECT_EQ(d.images[0].rows, 2);
  EXPECT_EQ(d.images[0].cols, 3);
  EXPECT_EQ(d.images[0].prompt, "a cat");
  // plain text has no image
  EXPECT_TRUE(p.mmdecode(p.tokenizer().encode("hello")).images.empty());
  EXPECT_EQ(p.mmdecode(p.tokenizer().encode("hello")).texts.front(), "hello");
}

TEST(XOmniUnits, InjectionProjectsAndResizesFeatures) {
  const auto& dec = pipe().decoder();
  auto w = SafetensorsFile::open((fs::path(xomni_dir()) / "diffusers/diffusion_pytorch_model.safetensors").string())
               .get("siglip_embedder.weight");
  at::manual_seed(1);
  at::Tensor f = at::randn({12, 32});
  at::Tensor same = dec.injection(f, 3, 4, 3, 4);
  EXPECT_TRUE(at::allclose(same[0], at::matmul(f, w.t()), 1e-5, 1e-5));
  // bicubic resize of a constant grid stays constant
  at::Tensor cst = at::ones({6, 32}) * 0.5;
  at::Tensor up = dec.injection(cst, 2, 3, 4, 6);
  ASSERT_EQ(up.sizes(), (at::IntArrayRef{1, 24, w.size(0)}));
  EXPECT_TRUE(at::allclose(up[0], at::matmul(cst.slice(0, 0, 1), w.t()).expand({24, -1}), 1e-5, 1e-5));
  EXPECT_THROW(dec.injection(f, 4, 4, 4, 4), Error);
}

// ---- bad inputs ------------------------------------------------------------------------------------

TEST(XOmniBadInputs, SizeNotAMultipleOf16) {
  const auto& p = pipe();
  EXPECT_THROW(p.t2i_prompt("x", 50, 64), Error);
  EXPECT_THROW(p.t2i_prompt("x", 64, 0), Error);
  EXPECT_THROW(p.t2i_prompt("x", 64, 8192), Error);
  EXPECT_THROW(xomni_check_size(1160, 1152), Error);
  EXPECT_NO_THROW(xomni_check_size(1152, 1152));
  XOmniCodes c;
  c.rows = 2, c.cols = 2, c.codes = {1, 2, 3};
  EXPECT_THROW(p.decode_codes(c), Error);
  c.codes = {1, 2, 3, 64};
  EXPECT_THROW(p.decode_codes(c), Error);
}

TEST(XOmniBadInputs, ImageFailingTheAnyresRules) {
  const auto& p = pipe();
  EXPECT_THROW(p.chat(test_image(200, 40), "?"), Error);  // aspect ratio 5 > 3
  EXPECT_THROW(p.chat(test_image(20, 20), "?"), Error);   // short side < min_short_size 32
}

TEST(XOmniBadInputs, FolderMissingVisionConfig) {
  TempDir d;
  const fs::path dir = linked_copy(d);
  auto cfg = read_json(dir / "config.json");
  cfg.erase("vision_config");
  write_json(dir / "config.json", cfg);
  try {
    XOmniPipeline::load(dir.string(), "");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vision_config"), std::string::npos) << e.what();
  }
}

TEST(XOmniBadInputs, TokenizerWithoutMMToken0AtVocabSize) {
  TempDir d;
  const fs::path dir = linked_copy(d);
  auto tok = read_json(dir / "tokenizer.json");
  for (auto& t : tok["added_tokens"])
    if (t["content"].get<std::string>().rfind("<MM-Token-", 0) == 0) t["id"] = t["id"].get<int64_t>() + 1;
  write_json(dir / "tokenizer.json", tok);
  try {
    XOmniPipeline::load(dir.string(), "");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<MM-Token-0>"), std::string::npos) << e.what();
  }
}

TEST(XOmniBadInputs, UnknownDecoderInjectionKeysAreListed) {
  TempDir d;
  const fs::path dir = linked_copy(d);
  const fs::path f = dir / "diffusers/diffusion_pytorch_model.safetensors";
  auto src = SafetensorsFile::open(fs::canonical(f).string());
  std::map<std::string, at::Tensor> all;
  for (const auto& i : src.tensors()) all[i.name] = src.get(i.name).clone();
  all["siglip_gate.weight"] = at::zeros({4});
  fs::remove(f);
  save_safetensors(f.string(), all);
  try {
    XOmniPipeline::load(dir.string(), flux_dir());
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("siglip_gate.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("siglip_embedder.weight"), std::string::npos) << what;
  }
}

TEST(XOmniBadInputs, UnknownViTNameWithoutSizes) {
  TempDir d;
  const fs::path dir = linked_copy(d);
  auto cfg = read_json(dir / "config.json");
  cfg["vision_config"]["encoder"].erase("siglip_config");
  write_json(dir / "config.json", cfg);
  EXPECT_THROW(XOmniPipeline::load(dir.string(), ""), Error);
}

TEST(XOmniEndToEnd, UpscaleFactorOtherThan16ResizesTheFeatures) {
  TempDir d;
  const fs::path dir = linked_copy(d);
  auto cfg = read_json(dir / "config.json");
  cfg["vision_config"]["decoder"]["upscale_factor"] = 32;
  write_json(dir / "config.json", cfg);
  auto p = XOmniPipeline::load(dir.string(), flux_dir());
  XOmniCodes c = *p.generate_codes(small("a boat"));
  auto img = p.decode_codes(c);
  ASSERT_TRUE(img);
  EXPECT_EQ(img->width, 4 * 32);  // a 3 x 4 code grid on a 6 x 8 packed latent grid
  EXPECT_EQ(img->height, 3 * 32);
}
