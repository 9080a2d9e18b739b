// Several ranks on the CPU over Gloo (docs/distributed.md): world sizes 2 and 4, as processes on
// the loopback, give what one process gives, for each strategy; a dead rank or a bad launch ends
// in a clear error, never a hang. Each run is omniflux-dist-worker (tests/distributed/worker.cpp).
//
// Tolerance: the latents are fp32 and may differ by rounding, not more. Sequence parallelism sums
// each query's attention over the keys in another order (the all-to-all regroups them by rank)
// and runs the projections on fewer rows, which can change the GEMM's blocking; tensor parallelism
// sums a row's products in per-rank partial sums. Each reorders fp32 sums, ~1e-7 relative per
// operation; after a few denoising steps of the tiny DiT that stays far below 1e-4 of the latents'
// range. Pixels (uint8 after rounding) may move by 1 where a value sits on a rounding boundary.
// Token choices (codes, text answers) must be identical.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "omniflux/io/image.h"
#include "omniflux/io/quantize.h"

namespace fs = std::filesystem;

namespace {

const fs::path& tiny() { return tiny_folders(3, {"flux_1_dev", "uniworld_v1", "siglip2", "x_omni"}); }

struct Result {
  int status = -1;
  std::string err;
  std::vector<float> latents;
  std::optional<omniflux::Image> image;
  std::string codes, text;
  // Per rank: the text tokens it sampled and its last language-model layer output.
  std::vector<std::string> tokens;
  std::vector<std::vector<float>> lm;
};

std::string read_text(const fs::path& p) { return fs::exists(p) ? read_bytes(p) : std::string(); }

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// One request with `nproc` ranks (1: one process, no launcher variables).
Result run_worker(std::vector<std::string> args, int nproc, const std::vector<std::string>& extra = {}) {
  TempDir out;
  std::vector<std::string> cmd = {bin("omniflux-dist-worker"), "--out", out.path().string(), "--threads", "1"};
  cmd.insert(cmd.end(), args.begin(), args.end());
  if (nproc > 1) cmd.insert(cmd.end(), {"--nproc", std::to_string(nproc)});
  cmd.insert(cmd.end(), extra.begin(), extra.end());
  Child c(cmd);
  Result r;
  r.status = c.wait();
  r.err = c.err();
  const std::string lat = read_text(out.path() / "latents.f32");
  r.latents.resize(lat.size() / sizeof(float));
  std::memcpy(r.latents.data(), lat.data(), r.latents.size() * sizeof(float));
  if (fs::exists(out.path() / "image.png")) r.image = omniflux::load_image((out.path() / "image.png").string());
  r.codes = read_text(out.path() / "codes.txt");
  r.text = read_text(out.path() / "text.txt");
  for (int k = 0; k < nproc; ++k) {
    r.tokens.push_back(read_text(out.path() / ("tokens." + std::to_string(k) + ".txt")));
    const std::string lm = read_text(out.path() / ("lm." + std::to_string(k) + ".f32"));
    r.lm.emplace_back(lm.size() / sizeof(float));
    std::memcpy(r.lm.back().data(), lm.data(), r.lm.back().size() * sizeof(float));
  }
  return r;
}

void expect_same(const Result& one, const Result& many, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(many.status, 0) << many.err;
  ASSERT_EQ(one.latents.size(), many.latents.size());
  float range = 0, diff = 0;
  for (size_t i = 0; i < one.latents.size(); ++i) {
    range = std::max(range, std::abs(one.latents[i]));
    diff = std::max(diff, std::abs(one.latents[i] - many.latents[i]));
  }
  EXPECT_LE(diff, 1e-4f * std::max(1.0f, range)) << "largest latent difference";
  ASSERT_EQ(one.image.has_value(), many.image.has_value());
  if (one.image) {
    ASSERT_EQ(one.image->rgb.size(), many.image->rgb.size());
    int most = 0;
    for (size_t i = 0; i < one.image->rgb.size(); ++i)
      most = std::max(most, std::abs(int(one.image->rgb[i]) - int(many.image->rgb[i])));
    EXPECT_LE(most, 1) << "largest pixel difference";
  }
  EXPECT_EQ(one.codes, many.codes);
  EXPECT_EQ(one.text, many.text);
}

// A text answer: every rank samples the tokens one process samples (so rank 0 writes the same
// text), and each rank's last LM layer output matches one process's up to the rounding of the
// per-rank partial sums (the same 1e-4 of the range as the latents).
void expect_same_answer(const Result& one, const Result& many, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(many.status, 0) << many.err;
  EXPECT_EQ(one.text, many.text);
  for (size_t k = 0; k < many.tokens.size(); ++k) {
    SCOPED_TRACE("rank " + std::to_string(k));
    EXPECT_EQ(many.tokens[k], one.tokens[0]);
    ASSERT_EQ(many.lm[k].size(), one.lm[0].size());
    float range = 0, diff = 0;
    for (size_t i = 0; i < one.lm[0].size(); ++i) {
      range = std::max(range, std::abs(one.lm[0][i]));
      diff = std::max(diff, std::abs(one.lm[0][i] - many.lm[k][i]));
    }
    EXPECT_LE(diff, 1e-4f * std::max(1.0f, range)) << "largest LM hidden-state difference";
  }
}

std::vector<std::string> flux_args() { return {"--case", "flux", "-m", (tiny() / "flux.1-dev").string()}; }

TEST(Distributed, FluxTextToImageSequenceParallel) {
  const Result one = run_worker(flux_args(), 1);
  ASSERT_EQ(one.status, 0) << one.err;
  ASSERT_FALSE(one.latents.empty());
  expect_same(one, run_worker(flux_args(), 2), "2 ranks");
  expect_same(one, run_worker(flux_args(), 4), "4 ranks");
}

TEST(Distributed, FluxTrueCfgParallelWithAndWithoutSequenceParallel) {
  auto args = flux_args();
  args.insert(args.end(), {"--negative", "blurry", "--true-cfg", "4"});
  const Result one = run_worker(args, 1);
  ASSERT_EQ(one.status, 0) << one.err;
  expect_same(one, run_worker(args, 2, {"--cfg-parallel", "2"}), "2 ranks = 2 CFG");
  expect_same(one, run_worker(args, 4, {"--cfg-parallel", "2"}), "4 ranks = 2 CFG x 2 sequence");
}

TEST(Distributed, UniWorldEditWithTwoReferences) {
  TempDir d;
  for (int k = 0; k < 2; ++k) omniflux::save_png((d.path() / ("ref" + std::to_string(k) + ".png")).string(), gradient_image(40 + 8 * k, 32, k));
  const std::vector<std::string> args = {"--case", "uniworld", "-m", (tiny() / "uniworld-v1").string(),
                                         "--flux", (tiny() / "flux.1-dev").string(), "--siglip", (tiny() / "siglip2").string(),
                                         "-i", (d.path() / "ref0.png").string(), "-i", (d.path() / "ref1.png").string(),
                                         "-p", "put the cube on the table"};
  const Result one = run_worker(args, 1);
  ASSERT_EQ(one.status, 0) << one.err;
  ASSERT_TRUE(one.image);
  expect_same(one, run_worker(args, 2), "2 ranks");
  expect_same(one, run_worker(args, 4), "4 ranks");
}

TEST(Distributed, XOmniGenerateWithCfg) {
  const std::vector<std::string> args = {"--case", "xomni", "-m", (tiny() / "x-omni").string(), "--flux",
                                         (tiny() / "flux.1-dev").string(), "--cfg", "2", "-W", "64", "-H", "64"};
  const Result one = run_worker(args, 1);
  ASSERT_EQ(one.status, 0) << one.err;
  ASSERT_FALSE(one.codes.empty());
  expect_same(one, run_worker(args, 2), "2 ranks, sequence");
  expect_same(one, run_worker(args, 2, {"--cfg-parallel", "2"}), "2 ranks, CFG");
  expect_same(one, run_worker(args, 4, {"--cfg-parallel", "2"}), "4 ranks, 2 CFG x 2");
}

// Tensor parallelism in the LMs (the tiny LMs have 4 query and 2 key/value heads): 2 ranks hold
// 2 query heads and 1 kv head each, 4 ranks 1 query head each and a kv head shared by 2 ranks.
TEST(Distributed, UniWorldTextAnswerTensorParallel) {
  TempDir d;
  omniflux::save_png((d.path() / "img.png").string(), gradient_image(48, 40, 1));
  const std::vector<std::string> args = {"--case", "uniworld", "-m", (tiny() / "uniworld-v1").string(),
                                         "--flux", (tiny() / "flux.1-dev").string(), "--siglip", (tiny() / "siglip2").string(),
                                         "--text", "-i", (d.path() / "img.png").string(), "-p", "what is this?"};
  const Result one = run_worker(args, 1);
  ASSERT_EQ(one.status, 0) << one.err;
  ASSERT_FALSE(one.tokens[0].empty());
  ASSERT_FALSE(one.lm[0].empty());
  expect_same_answer(one, run_worker(args, 2), "2 ranks");
  expect_same_answer(one, run_worker(args, 4), "4 ranks");
  expect_same_answer(one, run_worker(args, 2, {"--no-tensor-parallel"}), "2 ranks, whole LM on each");
}

TEST(Distributed, XOmniChatTensorParallel) {
  TempDir d;
  omniflux::save_png((d.path() / "img.png").string(), gradient_image(64, 64, 2));
  const std::vector<std::string> args = {"--case", "xomni", "-m", (tiny() / "x-omni").string(), "--text",
                                         "-i", (d.path() / "img.png").string(), "-p", "what is this?"};
  const Result one = run_worker(args, 1);
  ASSERT_EQ(one.status, 0) << one.err;
  ASSERT_FALSE(one.tokens[0].empty());
  ASSERT_FALSE(one.lm[0].empty());
  expect_same_answer(one, run_worker(args, 2), "2 ranks");
  expect_same_answer(one, run_worker(args, 4), "4 ranks");
  expect_same_answer(one, run_worker(args, 2, {"--no-tensor-parallel"}), "2 ranks, whole LM on each");
  // Streamed layers are built, and sliced, again for every use.
  expect_same_answer(one, run_worker(args, 4, {"--offload", "sequential"}), "4 ranks, sequential offload");
}

// Quantised layers split as plain ones: codes and their per-output-channel scales by rows for
// q/k/v and gate/up, codes by columns (scales whole) for o_proj and down_proj. On the CPU the codes
// are dequantised, so one process and several agree as closely as in fp32.
TEST(Distributed, XOmniChatTensorParallelQuantized) {
  TempDir d;
  omniflux::save_png((d.path() / "img.png").string(), gradient_image(64, 64, 2));
  for (omniflux::WeightFormat f : {omniflux::WeightFormat::Int8, omniflux::WeightFormat::Fp8}) {
    SCOPED_TRACE(omniflux::weight_format_name(f));
    const fs::path q = d.path() / omniflux::weight_format_name(f);
    omniflux::QuantizeOptions opt;
    opt.format = f;
    omniflux::quantize_folder((tiny() / "x-omni").string(), q.string(), opt);
    const std::vector<std::string> args = {"--case", "xomni", "-m", q.string(), "--text", "-i", (d.path() / "img.png").string(),
                                           "-p", "what is this?"};
    const Result one = run_worker(args, 1);
    ASSERT_EQ(one.status, 0) << one.err;
    ASSERT_FALSE(one.tokens[0].empty());
    expect_same_answer(one, run_worker(args, 2), "2 ranks");
    expect_same_answer(one, run_worker(args, 4), "4 ranks");
  }
}

// 3 ranks do not divide the LM's 4 query heads: every rank says so, naming the config field,
// before the layers load. (Sequence parallelism off, so that the DiT's own check is not the one
// that fires; the chat loads no DiT anyway.)
TEST(Distributed, TensorParallelRanksThatDoNotDivideTheLmFailClearly) {
  TempDir d;
  omniflux::save_png((d.path() / "img.png").string(), gradient_image(64, 64, 2));
  Result r = run_worker({"--case", "xomni", "-m", (tiny() / "x-omni").string(), "--text", "-i", (d.path() / "img.png").string()},
                        3, {"--no-sequence-parallel"});
  EXPECT_EQ(exit_code(r.status), 1);
  EXPECT_NE(r.err.find("config.json: num_attention_heads"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("num_attention_heads (4) divisible by the tensor-parallel ranks"), std::string::npos) << r.err;
  EXPECT_TRUE(r.text.empty());
  // The other two fields, in configs edited so that only they fail (the check runs on the config,
  // before any weight is read, so the unchanged weights never load).
  struct Case {
    std::string field;
    std::vector<std::pair<std::string, int>> edits;
    int nproc;
    std::string want;
  };
  for (const Case& c : {Case{"num_key_value_heads", {{"num_attention_heads", 6}, {"num_key_value_heads", 3}, {"head_dim", 8}}, 2,
                             "num_key_value_heads (3) divisible by the tensor-parallel ranks, or dividing them"},
                        Case{"intermediate_size", {{"intermediate_size", 66}}, 4, "intermediate_size (66) divisible by the tensor-parallel ranks"}}) {
    SCOPED_TRACE(c.field);
    const fs::path m = d.path() / c.field;
    fs::copy(tiny() / "x-omni", m, fs::copy_options::recursive);
    nlohmann::json j = nlohmann::json::parse(read_bytes(m / "config.json"));
    for (const auto& [k, v] : c.edits) j[k] = v;
    std::ofstream(m / "config.json") << j.dump();
    Result e = run_worker({"--case", "xomni", "-m", m.string(), "--text", "-i", (d.path() / "img.png").string()}, c.nproc);
    EXPECT_EQ(exit_code(e.status), 1);
    EXPECT_NE(e.err.find("config.json: " + c.field), std::string::npos) << e.err;
    EXPECT_NE(e.err.find(c.want), std::string::npos) << e.err;
  }
  // The same world with the LM whole on every rank answers.
  Result whole = run_worker({"--case", "xomni", "-m", (tiny() / "x-omni").string(), "--text", "-i", (d.path() / "img.png").string()},
                            3, {"--no-tensor-parallel"});
  EXPECT_EQ(whole.status, 0) << whole.err;
}

// Started as a launcher would: each rank its own process with torchrun's variables.
std::vector<std::string> rank_env(int rank, int world, int port) {
  return {"RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world), "LOCAL_RANK=" + std::to_string(rank),
          "LOCAL_WORLD_SIZE=" + std::to_string(world), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
}

// A socket listening on a free loopback port that rank 0 takes over (as --nproc does), so that
// no other test can take the port in between.
int listening_socket(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("cannot listen on the loopback");
  *port = ntohs(a.sin_port);
  return fd;
}

TEST(Distributed, ARankKilledMidRequestEndsTheOthersWithAClearError) {
  TempDir out;
  int port = 0;
  const int fd = listening_socket(&port);
  std::vector<std::unique_ptr<Child>> ranks;
  for (int r = 0; r < 2; ++r) {
    std::vector<std::string> cmd = {bin("omniflux-dist-worker"), "--out", out.path().string(), "--threads", "1",
                                    "--steps", "4", "--die-rank", "1", "--die-step", "1", "--dist-timeout", "60"};
    auto a = flux_args();
    cmd.insert(cmd.end(), a.begin(), a.end());
    auto env = rank_env(r, 2, port);
    if (r == 0) env.push_back("OMNIFLUX_MASTER_LISTEN_FD=" + std::to_string(fd));
    ranks.push_back(std::make_unique<Child>(cmd, env));
  }
  close(fd);
  // The survivor fails at its next collective with the dead peer (Gloo sees the closed socket);
  // wait() returning at all is the no-hang check, bounded by ctest's timeout.
  const int s0 = ranks[0]->wait(), s1 = ranks[1]->wait();
  EXPECT_EQ(exit_code(s1), 128 + SIGKILL);
  EXPECT_EQ(exit_code(s0), 1) << ranks[0]->err();
  EXPECT_NE(ranks[0]->err().find("a collective failed"), std::string::npos) << ranks[0]->err();
  EXPECT_NE(ranks[0]->err().find("[rank 0]"), std::string::npos) << ranks[0]->err();
  EXPECT_FALSE(fs::exists(out.path() / "image.png"));
}

TEST(Distributed, BadLaunchesFailBeforeLoading) {
  // A launcher variable missing.
  {
    Child c({bin("omniflux-dist-worker"), "--out", "/tmp", "--case", "flux", "-m", (tiny() / "flux.1-dev").string()},
            {"RANK=0", "WORLD_SIZE=2"});
    EXPECT_EQ(exit_code(c.wait()), 1);
    EXPECT_NE(c.err().find("MASTER_ADDR"), std::string::npos) << c.err();
  }
  {
    Child c({bin("omniflux-dist-worker"), "--out", "/tmp", "--case", "flux", "-m", (tiny() / "flux.1-dev").string()},
            {"RANK=2", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=1"});
    EXPECT_EQ(exit_code(c.wait()), 1);
    EXPECT_NE(c.err().find("RANK"), std::string::npos) << c.err();
  }
  // CFG pairs that do not divide the world: a usage error from the launcher, before any rank starts.
  {
    Result r = run_worker(flux_args(), 3, {"--cfg-parallel", "2"});
    EXPECT_EQ(exit_code(r.status), 2);
    EXPECT_NE(r.err.find("--cfg-parallel"), std::string::npos) << r.err;
  }
  // 3 ranks do not divide the DiT's 4 heads: every rank says so, naming the config, before the
  // DiT's weights load (no latents, no image).
  {
    Result r = run_worker(flux_args(), 3);
    EXPECT_NE(exit_code(r.status), 0);
    EXPECT_NE(r.err.find("num_attention_heads (4) divisible"), std::string::npos) << r.err;
    EXPECT_TRUE(r.latents.empty());
  }
}

}  // namespace
