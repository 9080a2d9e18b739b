// Tokenizers: id-exact agreement with Hugging Face on the real vocabularies (tests/fixtures/
// tokenizers/*/cases.jsonl), through the library and through omniflux-tokenize, plus edge cases,
// truncation and padding, the real FLUX.1-dev / UniWorld folder layouts and chat templates.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "../src/text/bpe_core.h"  // bytes_to_byte_level, for the byte-token checks
#include "../src/text/unicode.h"   // NFC, to state the round-trip expectation
#include "omniflux/error.h"
#include "text/bpe.h"
#include "text/chat_template.h"
#include "text/clip_tokenizer.h"
#include "text/t5_tokenizer.h"
#include "omniflux/text/tokenizer.h"

extern char** environ;

namespace {

using omniflux::Error;
using omniflux::text::EncodeOptions;
using omniflux::text::EncodeStats;
using omniflux::text::Tokenizer;
using Ids = std::vector<int64_t>;

const std::string kFixtures = OMNIFLUX_FIXTURES;
const std::string kTok = kFixtures + "/tokenizers";
const std::string kTool = std::string(OMNIFLUX_BIN_DIR) + "/omniflux-tokenize";

struct Case {
  std::string text;
  Ids ids;
  std::optional<Ids> ids_max77;
  std::string src;
};

std::vector<Case> read_cases(const std::string& name) {
  std::ifstream f(kTok + "/" + name + "/cases.jsonl");
  EXPECT_TRUE(f.good()) << name;
  std::vector<Case> cases;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    Case c{j.at("text").get<std::string>(), j.at("ids").get<Ids>(), std::nullopt, j.value("src", "")};
    if (j.contains("ids_max77")) c.ids_max77 = j["ids_max77"].get<Ids>();
    cases.push_back(std::move(c));
  }
  return cases;
}

// Loaded once per process: they are immutable and thread-safe.
const Tokenizer& qwen() {
  static const auto t = omniflux::text::load_tokenizer(kTok + "/qwen2");
  return *t;
}
const Tokenizer& clip() {
  static const auto t = omniflux::text::load_tokenizer(kTok + "/clip");
  return *t;
}
const Tokenizer& t5() {
  static const auto t = omniflux::text::load_tokenizer(kTok + "/t5");
  return *t;
}

std::string show(const Ids& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

// ---- a minimal safetensors reader for the pipeline fixtures' I64 / U8 inputs

struct Safetensors {
  std::string bytes;
  nlohmann::json header;
  size_t base = 0;
  explicit Safetensors(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    bytes = ss.str();
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    header = nlohmann::json::parse(bytes.substr(8, n));
    base = 8 + n;
  }
  std::string raw(const std::string& name) const {
    const auto& off = header.at(name).at("data_offsets");
    const size_t b = off[0].get<size_t>(), e = off[1].get<size_t>();
    return bytes.substr(base + b, e - b);
  }
  Ids i64(const std::string& name) const {
    EXPECT_EQ(header.at(name).at("dtype"), "I64");
    const std::string r = raw(name);
    Ids v(r.size() / 8);
    std::memcpy(v.data(), r.data(), r.size());
    return v;
  }
};

// ---- running the tool: argv passed verbatim (no shell), stdout and stderr captured

struct ToolRun {
  int status = -1;
  std::string out, err;
  std::string last_line() const {
    std::string s = out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    const size_t nl = s.rfind('\n');
    return nl == std::string::npos ? s : s.substr(nl + 1);
  }
};

ToolRun run_tool(const std::vector<std::string>& args, const std::vector<std::string>& extra_env = {}) {
  ToolRun r;
  int out_pipe[2], err_pipe[2];
  if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  posix_spawn_file_actions_addclose(&fa, out_pipe[0]);
  posix_spawn_file_actions_addclose(&fa, err_pipe[0]);
  std::vector<std::string> all = {kTool};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  env_store.insert(env_store.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, kTool.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (rc != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return r;
  }
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* dst[2] = {&r.out, &r.err};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) break;
    for (int k = 0; k < 2; ++k) {
      if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = read(fds[k].fd, buf, sizeof(buf));
      if (n > 0) {
        dst[k]->append(buf, static_cast<size_t>(n));
      } else {
        close(fds[k].fd);
        fds[k].fd = -1;
        --open_fds;
      }
    }
  }
  int st = 0;
  waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& data) {
    char p[] = "/tmp/omniflux_text_XXXXXX";
    const int fd = mkstemp(p);
    path = p;
    if (fd >= 0) {
      (void)!write(fd, data.data(), data.size());
      close(fd);
    }
  }
  ~TempFile() { unlink(path.c_str()); }
};

bool tool_available() {
  struct stat st;
  return ::stat(kTool.c_str(), &st) == 0;
}

// ---- cases.jsonl through the library

void check_cases(const std::string& name, const Tokenizer& tok) {
  const auto cases = read_cases(name);
  ASSERT_FALSE(cases.empty());
  size_t exact = 0, round_trips = 0, round_trip_checked = 0;
  for (const auto& c : cases) {
    const Ids ids = tok.encode(c.text);
    EXPECT_EQ(ids, c.ids) << name << " text " << nlohmann::json(c.text).dump() << " (src " << c.src << ")";
    if (ids == c.ids) ++exact;
    // Round trip. Qwen2 decodes to the NFC form of the text exactly. CLIP and T5 normalise
    // (lower case, whitespace, NFKC), so their decoded text must encode back to the same ids;
    // T5's <unk> cannot round-trip and is skipped.
    if (name == "qwen2") {
      ++round_trip_checked;
      const std::string back = tok.decode(c.ids);
      EXPECT_EQ(back, omniflux::text::detail::nfc(c.text)) << name << " decode of " << show(c.ids);
      if (back == omniflux::text::detail::nfc(c.text)) ++round_trips;
    } else {
      if (std::find(c.ids.begin(), c.ids.end(), 2) != c.ids.end() && name == "t5") continue;
      ++round_trip_checked;
      // Without the bos/eos that encode adds, but keeping special tokens written in the text.
      const size_t front = name == "clip" ? 1 : 0;
      const std::string back = tok.decode(Ids(c.ids.begin() + front, c.ids.end() - 1));
      const Ids again = tok.encode(back);
      EXPECT_EQ(again, c.ids) << name << " re-encoding of decoded " << nlohmann::json(back).dump();
      if (again == c.ids) ++round_trips;
    }
  }
  std::printf("[%s] %zu/%zu cases id-exact (library); %zu/%zu round-trips\n", name.c_str(), exact, cases.size(),
              round_trips, round_trip_checked);
}

}  // namespace

TEST(TokenizerCases, Qwen2IdExactAndRoundTrip) { check_cases("qwen2", qwen()); }
TEST(TokenizerCases, ClipIdExactAndRoundTrip) { check_cases("clip", clip()); }
TEST(TokenizerCases, T5IdExactAndRoundTrip) { check_cases("t5", t5()); }

TEST(TokenizerCases, ClipTruncatesTo77) {
  size_t checked = 0;
  for (const auto& c : read_cases("clip")) {
    EncodeOptions o;
    o.max_length = omniflux::text::ClipTokenizer::kContextLength;
    o.pad_to_max_length = true;
    const Ids ids = clip().encode(c.text, o);
    ASSERT_EQ(ids.size(), 77u);
    EXPECT_EQ(ids.front(), 49406);
    if (c.ids_max77) {
      ++checked;
      EXPECT_EQ(ids, *c.ids_max77);  // bos + first 75 + eos; nothing to pad
      o.pad_to_max_length = false;
      EXPECT_EQ(clip().encode(c.text, o), *c.ids_max77);
    } else {
      // Short texts: the ids, then 49407 up to 77.
      Ids want = c.ids;
      want.resize(77, 49407);
      EXPECT_EQ(ids, want);
    }
  }
  std::printf("[clip] %zu cases with ids_max77 in this copy of cases.jsonl\n", checked);
  // A prompt longer than 77 tokens keeps bos, the first 75 text tokens and eos.
  std::string long_text;
  for (int i = 0; i < 30; ++i) long_text += "a highly detailed photo of a red fox, ";
  const Ids full = clip().encode(long_text);
  ASSERT_GT(full.size(), 77u);
  EncodeOptions o;
  o.max_length = 77;
  o.pad_to_max_length = true;
  Ids want(full.begin(), full.begin() + 76);
  want.push_back(49407);
  EXPECT_EQ(clip().encode(long_text, o), want);
}

TEST(TokenizerCases, T5TruncatesAndPadsLikeT5TokenizerFast) {
  const std::string text = "A cinematic shot of a baby racoon wearing an intricate italian priest robe.";
  const Ids full = t5().encode(text);
  ASSERT_EQ(full.size(), 21u);
  EncodeOptions o;
  o.max_length = 8;  // 7 text tokens + </s>
  EXPECT_EQ(t5().encode(text, o), Ids({71, 10276, 1225, 2538, 13, 3, 9, 1}));
  o.max_length = 256;
  o.pad_to_max_length = true;
  Ids padded = t5().encode(text, o);
  ASSERT_EQ(padded.size(), 256u);
  Ids want = full;
  want.resize(256, 0);
  EXPECT_EQ(padded, want);
  o.max_length = 512;
  EXPECT_EQ(t5().encode("", o), [] { Ids v(512, 0); v[0] = 1; return v; }());
  EXPECT_EQ(t5().model_max_length(), std::optional<size_t>(512));
  EXPECT_EQ(clip().model_max_length(), std::optional<size_t>(77));
}

// ---- through omniflux-tokenize

namespace {

// The library is checked on every case in-process (TokenizerCases); the tool, which pays LibTorch's
// start-up per run, on four of them spread over the file: what is tested here is the CLI's plumbing.
void check_tool(const std::string& name, const std::string& path) {
  if (!tool_available()) GTEST_SKIP() << kTool << " was not built (OMNIFLUX_BUILD_EXAMPLES=OFF)";
  const auto all = read_cases(name);
  std::vector<Case> cases;
  for (size_t k = 0; k < 4 && k < all.size(); ++k) cases.push_back(all[k * all.size() / 4]);
  const auto tok = omniflux::text::load_tokenizer(path);
  size_t exact = 0, decoded = 0, decode_runs = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const ToolRun r = run_tool({"--tokenizer", path, "--text", c.text});
    ASSERT_EQ(r.status, 0) << r.err;
    const Ids ids = nlohmann::json::parse(r.last_line()).get<Ids>();
    EXPECT_EQ(ids, c.ids) << name << " text " << nlohmann::json(c.text).dump();
    if (ids == c.ids) ++exact;
    // --decode --json prints exactly what the library decodes (whose round trip is checked on
    // every case in-process).
    ++decode_runs;
    const ToolRun d = run_tool({"--tokenizer", path, "--decode", show(c.ids), "--json"});
    ASSERT_EQ(d.status, 0) << d.err;
    const std::string text = nlohmann::json::parse(d.last_line()).get<std::string>();
    EXPECT_EQ(text, tok->decode(c.ids)) << name << " --decode " << show(c.ids);
    if (text == tok->decode(c.ids)) ++decoded;
  }
  std::printf("[%s] %zu/%zu cases id-exact (omniflux-tokenize); %zu/%zu --decode runs agree\n", name.c_str(), exact,
              cases.size(), decoded, decode_runs);
}

}  // namespace

TEST(TokenizeTool, Qwen2Cases) { check_tool("qwen2", kTok + "/qwen2"); }
TEST(TokenizeTool, ClipCases) { check_tool("clip", kTok + "/clip"); }
TEST(TokenizeTool, T5Cases) { check_tool("t5", kTok + "/t5"); }

TEST(TokenizeTool, OptionsAndErrors) {
  if (!tool_available()) GTEST_SKIP() << kTool << " was not built";
  const std::string q = kTok + "/qwen2";
  // Text that starts with '-' or looks like an option is taken verbatim.
  ToolRun r = run_tool({"--tokenizer", q, "--text", "-5 apples"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(), qwen().encode("-5 apples"));
  r = run_tool({"--tokenizer", q, "--text", "--pad"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(), qwen().encode("--pad"));
  r = run_tool({"--tokenizer", q, "--text=-x"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(), qwen().encode("-x"));
  // Invalid UTF-8 is an error with a message, not a crash.
  r = run_tool({"--tokenizer", q, "--text", "ab\xff"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not valid UTF-8"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("offset 2"), std::string::npos) << r.err;
  r = run_tool({"--tokenizer", kTok + "/t5", "--text", "\xc3"});
  EXPECT_EQ(r.status, 1);
  // --text-file reads raw bytes.
  {
    TempFile f("Hello world");
    r = run_tool({"--tokenizer", q, "--text-file", f.path});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(), Ids({9707, 1879}));
  }
  // Padding and truncation flags.
  r = run_tool({"--tokenizer", kFixtures + "/flux_pipeline/tokenizer", "--text", "a photo of a cat", "--pad"});
  ASSERT_EQ(r.status, 0) << r.err;
  Ids want = {49406, 320, 1125, 539, 320, 2368, 49407};
  want.resize(77, 49407);
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(), want);
  r = run_tool({"--tokenizer", kFixtures + "/flux_pipeline/tokenizer_2", "--text", "hello", "--max-length", "4", "--pad"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(), Ids({21820, 1, 0, 0}));
  r = run_tool({"--tokenizer", kTok + "/clip", "--text", "a photo of a cat", "--no-special-tokens"});
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(), Ids({320, 1125, 539, 320, 2368}));
  // Decode forms.
  r = run_tool({"--tokenizer", q, "--decode", "9707, 1879"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world\n");
  r = run_tool({"--tokenizer", kTok + "/clip", "--decode", "[49406, 320, 1125, 49407]", "--skip-special-tokens"});
  EXPECT_EQ(r.out, "a photo\n");
  r = run_tool({"--tokenizer", q, "--decode", "[1, x]"});
  EXPECT_EQ(r.status, 1);
  r = run_tool({"--tokenizer", q, "--decode", "[999999999]"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("unknown token id"), std::string::npos) << r.err;
  // Usage errors.
  EXPECT_EQ(run_tool({"--tokenizer", q}).status, 2);
  EXPECT_EQ(run_tool({"--tokenizer", q, "--text"}).status, 2);
  EXPECT_EQ(run_tool({"--tokenizer", q, "--text", "a", "--bogus"}).status, 2);
  r = run_tool({"--tokenizer", kTok + "/nope", "--text", "a"});
  EXPECT_EQ(r.status, 1);
}

TEST(TokenizeTool, ChatTemplates) {
  if (!tool_available()) GTEST_SKIP() << kTool << " was not built";
  const std::string q = kTok + "/qwen2";
  ToolRun r = run_tool({"--tokenizer", q, "--chat-template", "qwen2_5_vl", "--images", "1", "--text", "Describe this image."});
  ASSERT_EQ(r.status, 0) << r.err;
  // components_qwen_siglip.md d.4: default system turn, then the image, then the text.
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(),
            Ids({151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 151652, 151655,
                 151653, 74785, 419, 2168, 13, 151645, 198, 151644, 77091, 198}));
  r = run_tool({"--tokenizer", q, "--chat-template", "uniworld", "--text", "a cat", "--print-prompt"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\"<|im_start|>user\\na cat<|im_end|>\\n<|im_start|>assistant\\n\""), std::string::npos) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(),
            qwen().encode("<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"));
  r = run_tool({"--tokenizer", q, "--chat-template", "xomni", "--text", "-hi", "--system", "S"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).get<Ids>(),
            qwen().encode("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n-hi<|im_end|>\n<|im_start|>assistant\n"));
  // An unknown template is a usage error naming the flag.
  const ToolRun bad = run_tool({"--tokenizer", q, "--chat-template", "llama", "--text", "x"});
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("--chat-template"), std::string::npos) << bad.err;
  // A chat template on a tokenizer without <|im_start|> is refused, naming the token.
  const ToolRun clip_chat = run_tool({"--tokenizer", kTok + "/clip", "--chat-template", "uniworld", "--text", "x"});
  EXPECT_EQ(clip_chat.status, 1);
  EXPECT_NE(clip_chat.err.find("\"<|im_start|>\""), std::string::npos) << clip_chat.err;
}

TEST(TokenizeTool, MissingPluginIsAClearError) {
  if (!tool_available()) GTEST_SKIP() << kTool << " was not built";
  char dir[] = "/tmp/omniflux_noplugin_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const ToolRun r = run_tool({"--tokenizer", kTok + "/t5", "--text", "hello"}, {std::string("OMNIFLUX_PLUGIN_DIR=") + dir});
  rmdir(dir);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("libomniflux_spm.so"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sentencepiece plugin"), std::string::npos) << r.err;
}

// ---- LibTorch and sentencepiece in one process

TEST(T5Tokenizer, WorksInAProcessThatUsesLibTorch) {
  // This binary links LibTorch (and so libprotobuf); linking libsentencepiece directly would
  // crash at start-up. The plugin keeps them apart.
  at::Tensor x = at::arange(6, at::kLong).reshape({2, 3});
  ASSERT_EQ(x.sum().item<int64_t>(), 15);
  const auto tok = omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/tokenizer_2");
  EncodeOptions o;
  o.max_length = 32;
  o.pad_to_max_length = true;
  const Ids ids = tok->encode("A cat holding a sign that says hello world", o);
  const at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
  const Safetensors io(kFixtures + "/flux_pipeline/io.safetensors");
  const Ids want = io.i64("t5_input_ids");
  EXPECT_TRUE(at::equal(t, at::tensor(want, at::kLong).reshape({1, 32})));
  EXPECT_EQ((x + 1).sum().item<int64_t>(), 21);  // LibTorch still fine after sentencepiece ran
}

// ---- real folder layouts and the pipeline fixtures

TEST(TokenizerLayouts, FluxAndUniWorldFolders) {
  const auto clip_dir = omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/tokenizer");
  EXPECT_EQ(clip_dir->kind(), "clip");
  EXPECT_EQ(clip_dir->vocab_size(), 49408);
  const auto t5_dir = omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/tokenizer_2");
  EXPECT_EQ(t5_dir->kind(), "t5");
  EXPECT_EQ(t5_dir->vocab_size(), 32100);
  EXPECT_EQ(t5_dir->token_to_id("<extra_id_0>"), std::optional<int64_t>(32099));
  EXPECT_EQ(t5_dir->token_to_id("<extra_id_99>"), std::optional<int64_t>(32000));
  const auto t5_json = omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/tokenizer_2/tokenizer.json");
  EXPECT_EQ(t5_json->kind(), "t5");
  const auto t5_model = omniflux::text::load_tokenizer(kTok + "/t5/spiece.model");
  EXPECT_EQ(t5_model->kind(), "t5");
  const auto qwen_root = omniflux::text::load_tokenizer(kFixtures + "/uniworld_pipeline/uniworld-v1");
  EXPECT_EQ(qwen_root->kind(), "byte_level_bpe");
  EXPECT_EQ(qwen_root->vocab_size(), 151665);
  EXPECT_EQ(qwen_root->pad_id(), std::optional<int64_t>(151643));
  const auto qwen_file = omniflux::text::load_tokenizer(kTok + "/qwen2/tokenizer.json");
  EXPECT_EQ(qwen_file->encode("Hello world"), Ids({9707, 1879}));
  const auto clip_file = omniflux::text::load_tokenizer(kTok + "/clip/vocab.json");
  EXPECT_EQ(clip_file->kind(), "clip");
  for (const auto& t : {clip_dir.get(), t5_dir.get(), t5_json.get(), t5_model.get()}) {
    for (const auto& c : read_cases(t->kind() == "clip" ? "clip" : "t5")) EXPECT_EQ(t->encode(c.text), c.ids) << c.text;
  }
  for (const auto& c : read_cases("qwen2")) EXPECT_EQ(qwen_root->encode(c.text), c.ids) << c.text;
  EXPECT_THROW(omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/vae"), Error);
  EXPECT_THROW(omniflux::text::load_tokenizer(kFixtures + "/does-not-exist"), Error);
  EXPECT_THROW(omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/model_index.json"), Error);
}

TEST(TokenizerLayouts, FluxPipelineFixtureIds) {
  const Safetensors io(kFixtures + "/flux_pipeline/io.safetensors");
  const std::string prompt = io.raw("prompt_utf8");
  const auto c = omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/tokenizer");
  const auto t = omniflux::text::load_tokenizer(kFixtures + "/flux_pipeline/tokenizer_2");
  EncodeOptions o;
  o.max_length = 77;
  o.pad_to_max_length = true;
  EXPECT_EQ(c->encode(prompt, o), io.i64("clip_input_ids"));
  o.max_length = static_cast<size_t>(io.i64("max_sequence_length").at(0));
  EXPECT_EQ(t->encode(prompt, o), io.i64("t5_input_ids"));
}

TEST(TokenizerLayouts, UniWorldPipelineFixtureIds) {
  const std::string root = kFixtures + "/uniworld_pipeline";
  const Safetensors io(root + "/io.safetensors");
  const std::string prompt = io.raw("prompt_utf8");
  const auto q = omniflux::text::load_tokenizer(root + "/uniworld-v1");
  const auto c = omniflux::text::load_tokenizer(root + "/flux.1-dev/tokenizer");
  const auto t = omniflux::text::load_tokenizer(root + "/flux.1-dev/tokenizer_2");
  const std::string chat = omniflux::text::render_uniworld(prompt, 1);
  EXPECT_EQ(chat, io.raw("inter_chat_text_utf8"));
  const Ids grid = io.i64("qwen_image_grid_thw");  // t, h, w
  const Ids ids = omniflux::text::expand_image_pads(q->encode(chat), 151655, {grid[0] * grid[1] * grid[2] / 4});
  EXPECT_EQ(ids, io.i64("qwen_input_ids"));
  EncodeOptions o;
  o.max_length = 77;
  o.pad_to_max_length = true;
  EXPECT_EQ(c->encode(prompt, o), io.i64("clip_input_ids"));
  o.max_length = static_cast<size_t>(io.i64("max_sequence_length").at(0));
  EXPECT_EQ(t->encode(prompt, o), io.i64("t5_input_ids"));
}

// ---- slow-tokenizer files and newer tokenizer.json forms, written from the fixture

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char d[] = "/tmp/omniflux_tok_XXXXXX";
    path = mkdtemp(d);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  void write(const std::string& name, const std::string& data) const {
    std::ofstream(path + "/" + name, std::ios::binary) << data;
  }
};

nlohmann::json qwen_json() {
  std::ifstream f(kTok + "/qwen2/tokenizer.json");
  return nlohmann::json::parse(f);
}

}  // namespace

TEST(ByteLevelBpe, VocabJsonAndMergesTxtGiveTheSameIds) {
  const nlohmann::json j = qwen_json();
  TempDir dir;
  dir.write("vocab.json", j["model"]["vocab"].dump());
  std::string merges = "#version: 0.2\r\n";
  for (const auto& m : j["model"]["merges"]) merges += m.get<std::string>() + "\r\n";  // CRLF as shipped
  dir.write("merges.txt", merges);
  nlohmann::json cfg = {{"tokenizer_class", "Qwen2Tokenizer"}, {"pad_token", "<|endoftext|>"}};
  for (const auto& t : j["added_tokens"]) {
    cfg["added_tokens_decoder"][std::to_string(t["id"].get<int64_t>())] = {{"content", t["content"]},
                                                                           {"special", t["special"]}};
  }
  dir.write("tokenizer_config.json", cfg.dump());
  const auto tok = omniflux::text::load_tokenizer(dir.path);
  EXPECT_EQ(tok->kind(), "byte_level_bpe");
  EXPECT_EQ(tok->vocab_size(), 151665);
  for (const auto& c : read_cases("qwen2")) EXPECT_EQ(tok->encode(c.text), c.ids) << c.text;
}

TEST(ByteLevelBpe, PairMergesAndAddedTokensAtAnyId) {
  // Newer tokenizer.json files write merges as ["a", "b"]. X-Omni adds <SOM>, <EOM>, <IMAGE> and
  // <MM-Token-k> as added tokens; here they sit at ids far from the base vocabulary.
  nlohmann::json j = qwen_json();
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    pairs.push_back({s.substr(0, sp), s.substr(sp + 1)});
  }
  j["model"]["merges"] = pairs;
  const int64_t mm0 = 152064;
  for (const auto& [name, id] : std::vector<std::pair<std::string, int64_t>>{{"<SOM>", 151665}, {"<EOM>", 151666}, {"<IMAGE>", 151667}}) {
    j["added_tokens"].push_back({{"id", id}, {"content", name}, {"special", true}});
  }
  for (int k = 0; k < 16384; ++k) {
    j["added_tokens"].push_back({{"id", mm0 + k}, {"content", "<MM-Token-" + std::to_string(k) + ">"}, {"special", false}});
  }
  TempDir dir;
  dir.write("tokenizer.json", j.dump());
  const auto tok = omniflux::text::load_tokenizer(dir.path + "/tokenizer.json");
  for (const auto& c : read_cases("qwen2")) EXPECT_EQ(tok->encode(c.text), c.ids) << c.text;
  EXPECT_EQ(tok->vocab_size(), mm0 + 16384);
  EXPECT_EQ(tok->token_to_id("<MM-Token-0>"), std::optional<int64_t>(mm0));
  // "<MM-Token-1>" must not stop at a prefix: <MM-Token-1>, <MM-Token-12> and <MM-Token-123> all exist.
  const std::string img = omniflux::text::xomni_image_text(2, 3, {0, 1, 12, 123, 16383, 5});
  EXPECT_EQ(img, "<SOM>2 3<IMAGE><MM-Token-0><MM-Token-1><MM-Token-12><MM-Token-123><MM-Token-16383><MM-Token-5><EOM>");
  const Ids ids = tok->encode(img + "\nWhat is this?");
  Ids want = {151665, 17, 220, 18, 151667, mm0, mm0 + 1, mm0 + 12, mm0 + 123, mm0 + 16383, mm0 + 5, 151666, 198};
  const Ids tail = qwen().encode("What is this?");
  want.insert(want.end(), tail.begin(), tail.end());
  EXPECT_EQ(ids, want);
  EXPECT_EQ(tok->decode(ids), img + "\nWhat is this?");
  EXPECT_EQ(tok->decode(ids, true), "2 3<MM-Token-0><MM-Token-1><MM-Token-12><MM-Token-123><MM-Token-16383><MM-Token-5>\nWhat is this?")
      << "only special added tokens are skipped";
  // generate.py's prompt: raw text + "<SOM>72 72<IMAGE>"; digits one per token.
  const Ids t2i = tok->encode(omniflux::text::xomni_t2i_prompt("a cat", 72, 72));
  EXPECT_EQ(Ids(t2i.end() - 7, t2i.end()), Ids({151665, 22, 17, 220, 22, 17, 151667}));
}

// ---- edge cases

TEST(TokenizerEdges, EmptyText) {
  EXPECT_EQ(qwen().encode(""), Ids{});
  EXPECT_EQ(clip().encode(""), Ids({49406, 49407}));
  EXPECT_EQ(t5().encode(""), Ids({1}));
  EXPECT_EQ(qwen().decode({}), "");
  EXPECT_EQ(clip().decode({}), "");
  EXPECT_EQ(t5().decode({}), "");
  EncodeOptions o;
  o.add_special_tokens = false;
  EXPECT_EQ(clip().encode("", o), Ids{});
  EXPECT_EQ(t5().encode("", o), Ids{});
}

TEST(TokenizerEdges, OnlySpacesAndNewlines) {
  for (const std::string s : {" ", "  ", "\n", "\r\n", "\n\n\n\n", " \n ", "\t\t", "\r", " \t\n\r\n  ", "\u3000", "\u00a0\u00a0"}) {
    const Ids ids = qwen().encode(s);
    EXPECT_FALSE(ids.empty()) << nlohmann::json(s).dump();
    EXPECT_EQ(qwen().decode(ids), s);
    EXPECT_EQ(clip().encode(s), Ids({49406, 49407})) << nlohmann::json(s).dump();
    EXPECT_EQ(t5().encode(s), Ids({1})) << nlohmann::json(s).dump();
  }
  EXPECT_EQ(qwen().encode(" \n "), Ids({715, 220}));  // " \n" then the trailing space
}

TEST(TokenizerEdges, SpecialTokensNextToText) {
  EXPECT_EQ(qwen().encode("<|im_start|>user"), Ids({151644, 872}));
  EXPECT_EQ(qwen().encode("x<|im_end|>y"), Ids({87, 151645, 88}));
  EXPECT_EQ(qwen().encode("<|im_end|><|im_end|>"), Ids({151645, 151645}));
  EXPECT_EQ(qwen().encode("<|im_end|>\n"), Ids({151645, 198}));
  EXPECT_EQ(qwen().encode("<<|im_end|>>"), Ids({27, 151645, 29}));
  // Non-special added tokens are matched too, and both kinds decode back to their text.
  EXPECT_EQ(qwen().encode("a<|fim_prefix|>b"), Ids({64, 151659, 65}));
  EXPECT_EQ(qwen().decode({64, 151659, 65, 151645}), "a<|fim_prefix|>b<|im_end|>");
  EXPECT_EQ(qwen().decode({64, 151659, 65, 151645}, true), "a<|fim_prefix|>b");
  // Added tokens are matched before NFC: an accent after one stays a separate piece.
  EXPECT_EQ(qwen().encode("<|im_end|>e\u0301"), qwen().encode("<|im_end|>\u00e9"));
  EXPECT_EQ(clip().encode("<|endoftext|>a photo"), Ids({49406, 49407, 320, 1125, 49407}));
  EXPECT_EQ(clip().encode("a<|startoftext|>b"), Ids({49406, 320, 49406, 321, 49407}));
  EXPECT_EQ(t5().encode("hello</s>"), Ids({21820, 1, 1}));
  EXPECT_EQ(t5().encode("<extra_id_0>hello<extra_id_1>"), Ids({32099, 21820, 32098, 1}));
  EXPECT_EQ(t5().decode({32099, 296, 1}), "<extra_id_0> world</s>");
  EXPECT_EQ(t5().decode({32099, 296, 1}, true), "world");
}

TEST(TokenizerEdges, UnknownAndPartialBytes) {
  // Control bytes are ordinary byte-level tokens.
  const std::string ctrl("\x00\x01\x1b\x7f", 4);
  const Ids ids = qwen().encode(ctrl);
  EXPECT_EQ(ids.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(ids[i], qwen().token_to_id(omniflux::text::detail::bytes_to_byte_level(ctrl.substr(i, 1))));
  }
  EXPECT_EQ(qwen().decode(ids), ctrl);
  // " 🦙" is split inside its UTF-8 bytes; decoding a part gives U+FFFD, the whole gives it back.
  const Ids llama = qwen().encode(" 🦙");
  ASSERT_EQ(llama, Ids({11162, 99, 247}));
  EXPECT_EQ(qwen().decode({11162}), " \xEF\xBF\xBD");
  EXPECT_EQ(qwen().decode({99, 247}), "\xEF\xBF\xBD\xEF\xBF\xBD");  // two stray continuation bytes
  EXPECT_EQ(qwen().decode({11162, 99}), " \xEF\xBF\xBD");
  EXPECT_EQ(qwen().decode(llama), " 🦙");
  EXPECT_EQ(clip().decode({49406, 7334, 3490, 49407}, true), "😀 smile");
  // Characters outside T5's vocabulary become <unk> (2), runs fused.
  const Ids t = t5().encode("🦙🦙 x");
  EXPECT_EQ(t.back(), 1);
  EXPECT_NE(std::find(t.begin(), t.end(), 2), t.end());
  // Unknown ids are errors, not crashes.
  EXPECT_THROW(qwen().decode({-1}), Error);
  EXPECT_THROW(qwen().decode({151665}), Error);
  EXPECT_THROW(clip().decode({49408}), Error);
  EXPECT_THROW(t5().decode({32100}), Error);
  EXPECT_THROW(qwen().id_to_token(1 << 30), Error);
  EXPECT_EQ(qwen().token_to_id("no such token"), std::nullopt);
  // The lookup of a token the caller needs: its id, or an Error naming the token and the caller.
  EXPECT_EQ(qwen().require_token_id("<|im_end|>", "test"), qwen().token_to_id("<|im_end|>").value());
  EXPECT_EQ(clip().require_token_id("<|endoftext|>", "test"), 49407);
  EXPECT_EQ(t5().require_token_id("</s>", "test"), 1);
  try {
    t5().require_token_id("<SOM>", "X-Omni tokenizer /m");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "token missing from the tokenizer (X-Omni tokenizer /m): expected \"<SOM>\" in its "
                           "vocabulary or added tokens, got no such token");
  }
  EXPECT_EQ(omniflux::text::require_token_id(7, "x", "w"), 7);
  EXPECT_THROW(omniflux::text::require_token_id(std::nullopt, "x", "w"), Error);
  EXPECT_EQ(qwen().id_to_token(9707), "Hello");
  EXPECT_EQ(qwen().id_to_token(151644), "<|im_start|>");
  EXPECT_EQ(t5().id_to_token(21820), "\xE2\x96\x81hello");
  EXPECT_EQ(clip().id_to_token(320), "a</w>");
}

namespace {
std::string hex(const std::string& s) {
  std::string out;
  char buf[4];
  for (const char c : s) {
    std::snprintf(buf, sizeof(buf), "%02x ", static_cast<unsigned char>(c));
    out += buf;
  }
  return out;
}
}  // namespace

TEST(TokenizerEdges, InvalidUtf8IsAnError) {
  const std::vector<std::string> bad = {"\xff", "abc\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                        "\xf4\x90\x80\x80", "\x80", "ok \xe2\x82"};
  for (const auto& s : bad) {
    for (const Tokenizer* t : {&qwen(), &clip(), &t5()}) {
      EXPECT_THROW(t->encode(s), Error) << t->kind() << " " << hex(s);
    }
  }
  try {
    qwen().encode("abc\xff");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("offset 3"), std::string::npos) << e.what();
  }
  // Valid edge code points are accepted.
  for (const std::string& s : std::vector<std::string>{"\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf", std::string("a\0b", 3)}) {
    EXPECT_NO_THROW(qwen().encode(s));
    EXPECT_EQ(qwen().decode(qwen().encode(s)), s);
  }
}

TEST(TokenizerEdges, UnicodeSemanticsOfTheReferences) {
  const auto cat = [](Ids a, const Ids& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  // \s means Unicode White_Space as in Oniguruma: U+180E is not a space (PCRE2's own \s says it
  // is), so it joins the punctuation after it; U+0085 and U+3000 are spaces.
  // "a \u180Eb" splits as "a", " \u180E", "b"; with PCRE2's \s it would be "a", " ", "\u180Eb".
  EXPECT_EQ(qwen().encode("a \u180Eb"), Ids({64, 86089, 254, 236, 65}));
  EXPECT_EQ(qwen().encode("a \u180Eb"), cat(cat(qwen().encode("a"), qwen().encode(" \u180E")), qwen().encode("b")));
  EXPECT_NE(qwen().encode("a \u180Eb"), cat(cat(qwen().encode("a"), qwen().encode(" ")), qwen().encode("\u180Eb")));
  // U+0085 is a space: "a", " ", "\u0085b".
  EXPECT_EQ(qwen().encode("a \u0085b"), Ids({64, 220, 126, 227, 65}));
  EXPECT_EQ(qwen().encode("x\u3000\u3000y"), cat(cat(qwen().encode("x"), qwen().encode("\u3000")), qwen().encode("\u3000y")));
  // CLIP lower-cases like Python's str.lower(): final sigma, and U+0130 to "i" + U+0307.
  EXPECT_EQ(clip().encode("ΟΔΟΣ"), clip().encode("οδος"));
  EXPECT_NE(clip().encode("ΟΔΟΣ"), clip().encode("οδοσ"));
  EXPECT_EQ(clip().encode("ΣΑ"), clip().encode("σα"));
  EXPECT_EQ(clip().encode("\u0130"), clip().encode("i\u0307"));
  // ...and cleans whitespace like Python's re \s, which includes U+001C..U+001F.
  EXPECT_EQ(clip().encode("a\x1c\x1d b"), clip().encode("a b"));
  // NFC composes before BPE (Qwen2 and CLIP); T5's nmt_nfkc folds compatibility forms.
  EXPECT_EQ(qwen().encode("e\u0301"), qwen().encode("\u00e9"));
  EXPECT_EQ(clip().encode("e\u0301"), clip().encode("\u00e9"));
  EXPECT_EQ(t5().encode("\uff21"), t5().encode("A"));
}

TEST(TokenizerEdges, OptionsErrors) {
  EncodeOptions o;
  o.pad_to_max_length = true;
  EXPECT_THROW(clip().encode("a", o), Error);  // padding without a length
  o.max_length = 1;
  EXPECT_THROW(clip().encode("a", o), Error);  // no room for bos + eos
  o.max_length = 2;
  EXPECT_EQ(clip().encode("a photo", o), Ids({49406, 49407}));
  o.max_length = 5;
  EXPECT_EQ(qwen().encode("Hello", o), Ids({9707, 151643, 151643, 151643, 151643}));
}

TEST(TokenizerEdges, ConcurrentEncodeIsConsistent) {
  const auto cases = read_cases("qwen2");
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 5; ++rep)
        for (const auto& c : cases) failures[k] += qwen().encode(c.text) != c.ids;
      for (const auto& c : read_cases("t5")) failures[k] += t5().encode(c.text) != c.ids;
    });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(failures[k], 0) << "thread " << k;
}

// ---- a 1 MB prompt: correct and linear (work counted, nothing timed)

namespace {

std::string repeat_to(const std::string& unit, size_t n) {
  std::string s;
  while (s.size() < n) s += unit;
  size_t cut = n;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  s.resize(cut);
  return s;
}

}  // namespace

TEST(TokenizerLarge, OneMegabytePromptIsLinear) {
  constexpr size_t kMB = 1 << 20;
  const std::string prose_unit =
      "A photo of a cat, 35mm.\n\nDescribe it: \"naïve café\" — 我想在apple工作 🦙 <|im_end|> Привет   \r\n";
  for (const std::string& unit : {prose_unit, std::string("a"), std::string(" "), std::string("\n"), std::string("9"),
                                  std::string("!?"), std::string("ab")}) {
    EncodeStats s1, s2;
    EncodeOptions o1, o2;
    o1.stats = &s1;
    o2.stats = &s2;
    const std::string one = repeat_to(unit, kMB), two = repeat_to(unit, 2 * kMB);
    const Ids ids = qwen().encode(one, o1);
    qwen().encode(two, o2);
    // BPE work grows linearly (a rank-ordered queue, not a rescan per merge)...
    EXPECT_LE(s1.bpe_work, 8 * kMB) << nlohmann::json(unit).dump();
    EXPECT_LE(static_cast<double>(s2.bpe_work), 2.1 * static_cast<double>(s1.bpe_work) + 64) << nlohmann::json(unit).dump();
    // ...and the result is right: it decodes back to the text.
    EXPECT_EQ(qwen().decode(ids), one) << nlohmann::json(unit).dump();
  }
  // One letter repeated is a single 1 MB pre-token; BPE must still merge it to the same ids as
  // a short run of it, period by period ("a" x 8 is one token).
  const Ids a = qwen().encode(std::string(kMB, 'a'));
  EXPECT_EQ(a.size(), kMB / 8);
  EXPECT_EQ(a.front(), qwen().encode("aaaaaaaa").at(0));
  EncodeOptions o;
  o.max_length = 77;
  o.pad_to_max_length = true;
  EXPECT_EQ(clip().encode(repeat_to(prose_unit, kMB), o).size(), 77u);
  const Ids t = t5().encode(repeat_to(prose_unit, kMB));
  EXPECT_GT(t.size(), kMB / 8);
  EXPECT_EQ(t.back(), 1);
}

// ---- chat templates

TEST(ChatTemplates, Qwen2_5VL) {
  using namespace omniflux::text;
  const std::string sys = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
  EXPECT_EQ(render_qwen2_5_vl({ChatMessage{"user", {ChatContent::image(), ChatContent::make_text("Describe this image.")}}}),
            sys + "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
                  "<|im_start|>assistant\n");
  Qwen2_5VLTemplateOptions o;
  o.add_vision_id = true;
  o.add_generation_prompt = false;
  EXPECT_EQ(render_qwen2_5_vl({ChatMessage{"user", {ChatContent::image(), ChatContent::video(), ChatContent::image()}}}, o),
            sys + "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>Video 1: "
                  "<|vision_start|><|video_pad|><|vision_end|>Picture 2: <|vision_start|><|image_pad|><|vision_end|>"
                  "<|im_end|>\n");
  EXPECT_EQ(render_qwen2_5_vl({ChatMessage::text("system", "Be brief."), ChatMessage::text("user", "hi"),
                               ChatMessage::text("assistant", "hello"), ChatMessage::text("user", "bye")}),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello"
            "<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_one_turn(ChatTemplate::Qwen2_5VL, "x", 0), sys + "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplates, UniWorld) {
  using namespace omniflux::text;
  EXPECT_EQ(render_uniworld("a red car"), "<|im_start|>user\na red car<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_uniworld("edit", 2),
            "<|im_start|>user\nedit<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|>"
            "<|vision_end|><|im_end|>\n<|im_start|>assistant\n");
  // uniworld.md 3.1: T2I length is 3 + P + 5.
  const Ids ids = qwen().encode(render_uniworld("A photo of a cat"));
  EXPECT_EQ(ids.size(), 3 + qwen().encode("A photo of a cat").size() + 5);
  EXPECT_EQ(Ids(ids.begin(), ids.begin() + 3), Ids({151644, 872, 198}));
  EXPECT_EQ(Ids(ids.end() - 5, ids.end()), Ids({151645, 198, 151644, 77091, 198}));
  // A prompt that itself contains "<|im_end|>\n" loses only the system turn, as in app.py.
  EXPECT_EQ(render_uniworld("a<|im_end|>\nb"), "<|im_start|>user\na<|im_end|>\nb<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_THROW(render_one_turn(ChatTemplate::UniWorld, "x", 0, std::string("sys")), Error);
}

TEST(ChatTemplates, XOmni) {
  using namespace omniflux::text;
  EXPECT_EQ(render_xomni_chat("hi"),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  XOmniChatOptions none;
  none.system_prompt = std::nullopt;
  EXPECT_EQ(render_xomni_chat("hi", none), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_xomni_chat({ChatMessage::text("system", "S"), ChatMessage::text("user", "q")}),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_THROW(render_xomni_chat({ChatMessage{"user", {ChatContent::image()}}}), Error);
  EXPECT_EQ(xomni_image_prefix(72, 72), "<SOM>72 72<IMAGE>");
  EXPECT_EQ(xomni_t2i_prompt("a cat", 4, 6), "a cat<SOM>4 6<IMAGE>");
  EXPECT_THROW(xomni_image_text(2, 2, {1, 2, 3}), Error);
  EXPECT_THROW(render_one_turn(ChatTemplate::XOmni, "x", 1), Error);
  EXPECT_EQ(parse_chat_template("xomni"), ChatTemplate::XOmni);
  EXPECT_THROW(parse_chat_template("chatml"), Error);
}

TEST(ChatTemplates, ExpandImagePads) {
  using omniflux::text::expand_image_pads;
  EXPECT_EQ(expand_image_pads({1, 9, 2, 9, 3}, 9, {2, 3}), Ids({1, 9, 9, 2, 9, 9, 9, 3}));
  EXPECT_THROW(expand_image_pads({1, 9, 2}, 9, {}), Error);
  EXPECT_THROW(expand_image_pads({1, 2}, 9, {4}), Error);
}
