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
//
// omniflux-server with --nproc (DistributedServer.*): rank 0 serves HTTP and the other ranks
// compute each request with it; answers equal a one-process server's, streams and cancellations
// keep the ranks in step, heartbeats keep idle ranks inside --dist-timeout, SIGTERM ends every
// rank, and a rank that dies fails the request (503) and the server (exit 1).
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "../server_process.h"
#include "../test_util.h"
#include "data_uri.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/quantize.h"
#include "nn/attention.h"
#include "ranks.h"

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

// scripts/device-check.sh runs these comparisons on the GPUs over NCCL: OMNIFLUX_DIST_TEST_DEVICE=cuda
// (fp32, one GPU per rank) and OMNIFLUX_DIST_TEST_MAX_RANKS (the GPUs there are).
std::vector<std::string> device_args() {
  const char* d = std::getenv("OMNIFLUX_DIST_TEST_DEVICE");
  if (!d || !*d) return {};
  return {"--device", d, "--dtype", "float32"};
}
bool allowed(int ranks) {
  const char* m = std::getenv("OMNIFLUX_DIST_TEST_MAX_RANKS");
  return !m || !*m || ranks <= std::atoi(m);
}

std::string read_text(const fs::path& p) { return fs::exists(p) ? read_bytes(p) : std::string(); }

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// One request with `nproc` ranks (1: one process, no launcher variables).
Result run_worker(std::vector<std::string> args, int nproc, const std::vector<std::string>& extra = {}) {
  TempDir out;
  std::vector<std::string> cmd = {bin("omniflux-dist-worker"), "--out", out.path().string(), "--threads", "1"};
  cmd.insert(cmd.end(), args.begin(), args.end());
  const auto dev = device_args();
  cmd.insert(cmd.end(), dev.begin(), dev.end());
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
  if (allowed(4)) expect_same(one, run_worker(flux_args(), 4), "4 ranks");
}

TEST(Distributed, FluxTrueCfgParallelWithAndWithoutSequenceParallel) {
  auto args = flux_args();
  args.insert(args.end(), {"--negative", "blurry", "--true-cfg", "4"});
  const Result one = run_worker(args, 1);
  ASSERT_EQ(one.status, 0) << one.err;
  expect_same(one, run_worker(args, 2, {"--cfg-parallel", "2"}), "2 ranks = 2 CFG");
  if (allowed(4)) expect_same(one, run_worker(args, 4, {"--cfg-parallel", "2"}), "4 ranks = 2 CFG x 2 sequence");
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
  if (allowed(4)) expect_same(one, run_worker(args, 4), "4 ranks");
}

TEST(Distributed, XOmniGenerateWithCfg) {
  const std::vector<std::string> args = {"--case", "xomni", "-m", (tiny() / "x-omni").string(), "--flux",
                                         (tiny() / "flux.1-dev").string(), "--cfg", "2", "-W", "64", "-H", "64"};
  const Result one = run_worker(args, 1);
  ASSERT_EQ(one.status, 0) << one.err;
  ASSERT_FALSE(one.codes.empty());
  expect_same(one, run_worker(args, 2), "2 ranks, sequence");
  expect_same(one, run_worker(args, 2, {"--cfg-parallel", "2"}), "2 ranks, CFG");
  if (allowed(4)) expect_same(one, run_worker(args, 4, {"--cfg-parallel", "2"}), "4 ranks, 2 CFG x 2");
}

#ifdef OMNIFLUX_TORCH_PYTHON
// PyTorch's own launcher (torchrun = python -m torch.distributed.run; --standalone picks a free
// port) starts the ranks; its agent serves the rendezvous store (TORCHELASTIC_USE_AGENT_STORE),
// which rank 0 then joins as a client.
TEST(Distributed, TorchrunLaunchesTheRanks) {
  const Result one = run_worker(flux_args(), 1);
  ASSERT_EQ(one.status, 0) << one.err;
  TempDir out;
  std::vector<std::string> cmd = {OMNIFLUX_TORCH_PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                  "--standalone", "--no-python", bin("omniflux-dist-worker"), "--out",
                                  out.path().string(), "--threads", "1"};
  for (const auto& a : flux_args()) cmd.push_back(a);
  Child c(cmd, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(c.wait(), 0) << c.err();
  Result two;
  two.status = 0;
  const std::string lat = read_text(out.path() / "latents.f32");
  two.latents.resize(lat.size() / sizeof(float));
  std::memcpy(two.latents.data(), lat.data(), two.latents.size() * sizeof(float));
  two.image = omniflux::load_image((out.path() / "image.png").string());
  expect_same(one, two, "torchrun, 2 ranks");
}
#endif
// One process's answer, then 2 and 4 ranks and 2 with the LM whole on each must give it.
Result check_tensor_parallel_answers(const std::vector<std::string>& args) {
  Result one = run_worker(args, 1);
  EXPECT_EQ(one.status, 0) << one.err;
  EXPECT_FALSE(one.tokens[0].empty());
  EXPECT_FALSE(one.lm[0].empty());
  if (one.status != 0 || one.tokens[0].empty() || one.lm[0].empty()) return one;
  expect_same_answer(one, run_worker(args, 2), "2 ranks");
  expect_same_answer(one, run_worker(args, 4), "4 ranks");
  expect_same_answer(one, run_worker(args, 2, {"--no-tensor-parallel"}), "2 ranks, whole LM on each");
  return one;
}

// Tensor parallelism in the LMs (the tiny LMs have 4 query and 2 key/value heads): 2 ranks hold
// 2 query heads and 1 kv head each, 4 ranks 1 query head each and a kv head shared by 2 ranks.
TEST(Distributed, UniWorldTextAnswerTensorParallel) {
  TempDir d;
  omniflux::save_png((d.path() / "img.png").string(), gradient_image(48, 40, 1));
  const std::vector<std::string> args = {"--case", "uniworld", "-m", (tiny() / "uniworld-v1").string(),
                                         "--flux", (tiny() / "flux.1-dev").string(), "--siglip", (tiny() / "siglip2").string(),
                                         "--text", "-i", (d.path() / "img.png").string(), "-p", "what is this?"};
  check_tensor_parallel_answers(args);
}

TEST(Distributed, XOmniChatTensorParallel) {
  TempDir d;
  omniflux::save_png((d.path() / "img.png").string(), gradient_image(64, 64, 2));
  const std::vector<std::string> args = {"--case", "xomni", "-m", (tiny() / "x-omni").string(), "--text",
                                         "-i", (d.path() / "img.png").string(), "-p", "what is this?"};
  const Result one = check_tensor_parallel_answers(args);
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
  // Garbage in the launcher's variables names the variable.
  for (const auto& [env, name] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"RANK=0", "WORLD_SIZE=abc"}, "WORLD_SIZE"},
           {{"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=70000"}, "MASTER_PORT"},
           {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=-1", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=1"}, "LOCAL_RANK"},
           {{"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=", "MASTER_PORT=1"}, "MASTER_ADDR"}}) {
    Child c({bin("omniflux-dist-worker"), "--out", "/tmp", "--case", "flux", "-m", (tiny() / "flux.1-dev").string()}, env);
    EXPECT_EQ(exit_code(c.wait()), 1) << name;
    EXPECT_NE(c.err().find("environment variable " + name), std::string::npos) << c.err();
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

// --dry-run --nproc N plans rank 0 of N simulated ranks: its share of the activations and what it
// sends; no process is started and nothing connects.
TEST(Distributed, DryRunPlansOneRankAndItsTraffic) {
  const std::string m = (tiny() / "flux.1-dev").string();
  {
    Child c({bin("omniflux-flux"), "-m", m, "-p", "x", "-W", "256", "-H", "256", "--dry-run", "--nproc", "4"});
    ASSERT_EQ(exit_code(c.wait()), 0) << c.err();
    EXPECT_NE(c.out().find("communication of rank 0 of 4 (1 CFG x 4 inner"), std::string::npos) << c.out();
    // 1 double + 1 single block: 2 all-to-alls each, then the output gather.
    EXPECT_NE(c.out().find("flux_dit"), std::string::npos);
    EXPECT_NE(c.out().find("     5 calls"), std::string::npos) << c.out();
  }
  {
    Child c({bin("omniflux-flux"), "-m", m, "-p", "x", "--dry-run", "--nproc", "3"});
    EXPECT_EQ(exit_code(c.wait()), 1);
    EXPECT_NE(c.err().find("num_attention_heads (4) divisible"), std::string::npos) << c.out() << c.err();
  }
}

// Only rank 0 reads the command line's input files and checks its output path: rank 1 runs in an
// empty folder (as on another host without the files), gets the reference image from rank 0, and
// the picture equals one process's.
TEST(Distributed, OnlyRankZeroReadsTheInputs) {
  TempDir here, elsewhere;
  omniflux::save_png((here.path() / "ref.png").string(), gradient_image(48, 40, 3));
  const std::vector<std::string> cmd = {bin("omniflux-uniworld"), "-m", (tiny() / "uniworld-v1").string(), "--flux",
                                        (tiny() / "flux.1-dev").string(), "--siglip", (tiny() / "siglip2").string(),
                                        "-i", "ref.png", "-p", "make it blue", "--task", "image", "-W", "64", "-H", "64",
                                        "--steps", "2", "--threads", "1", "--quiet", "-o", "out.png"};
  {
    Child one(cmd, {}, here.path().string());
    ASSERT_EQ(one.wait(), 0) << one.err();
    fs::rename(here.path() / "out.png", here.path() / "one.png");
  }
  int port = 0;
  const int fd = listening_socket(&port);
  auto env0 = rank_env(0, 2, port), env1 = rank_env(1, 2, port);
  env0.push_back("OMNIFLUX_MASTER_LISTEN_FD=" + std::to_string(fd));
  Child r0(cmd, env0, here.path().string()), r1(cmd, env1, elsewhere.path().string());
  close(fd);
  const int s0 = r0.wait(), s1 = r1.wait();
  ASSERT_EQ(s0, 0) << r0.err();
  ASSERT_EQ(s1, 0) << r1.err();
  EXPECT_FALSE(fs::exists(elsewhere.path() / "out.png"));
  const omniflux::Image a = omniflux::load_image((here.path() / "one.png").string());
  const omniflux::Image b = omniflux::load_image((here.path() / "out.png").string());
  ASSERT_EQ(a.rgb.size(), b.rgb.size());
  int most = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) most = std::max(most, std::abs(int(a.rgb[i]) - int(b.rgb[i])));
  EXPECT_LE(most, 1);
}

// Ctrl-C reaching one rank only stops every rank at the same step (the ranks agree on it at each
// progress call): all exit as cancelled, none with a failed collective.
TEST(Distributed, CtrlCOnOneRankCancelsEveryRank) {
  TempDir out;
  int port = 0;
  const int fd = listening_socket(&port);
  const std::vector<std::string> cmd = {bin("omniflux-flux"), "-m", (tiny() / "flux.1-dev").string(), "-p", "x", "-W", "64",
                                        "-H", "64", "--steps", "1000", "--threads", "1", "-o", (out.path() / "x.png").string()};
  auto env0 = rank_env(0, 2, port);
  env0.push_back("OMNIFLUX_MASTER_LISTEN_FD=" + std::to_string(fd));
  Child r0(cmd, env0), r1(cmd, rank_env(1, 2, port));
  close(fd);
  ASSERT_TRUE(r0.wait_for_stderr("denoise 3/1000", 120)) << r0.err();
  r1.signal(SIGINT);
  const int s0 = r0.wait(), s1 = r1.wait();
  EXPECT_EQ(exit_code(s0), 130) << r0.err();
  EXPECT_EQ(exit_code(s1), 130) << r1.err();
  EXPECT_EQ(r0.err().find("collective failed"), std::string::npos) << r0.err();
  EXPECT_EQ(r1.err().find("collective failed"), std::string::npos) << r1.err();
  EXPECT_FALSE(fs::exists(out.path() / "x.png"));
}

// The collectives themselves, on 3 ranks as threads of this process (Gloo between them): uneven
// all-to-all and all-gather, all-reduce, broadcast, and a failing collective's error.
TEST(Distributed, CollectivesWithUnevenSplits) {
  int port = 0;
  const int fd = listening_socket(&port);
  constexpr int kWorld = 3;
  std::vector<std::string> failures(kWorld);
  auto rank_main = [&](int r) {
    try {
      omniflux::LaunchEnv env;
      env.launched = true, env.rank = r, env.world_size = kWorld, env.master_addr = "127.0.0.1", env.master_port = port;
      if (r == 0) env.master_listen_fd = fd;
      omniflux::ParallelOptions opt;
      opt.timeout_s = 60;
      auto par = omniflux::Parallel::init(env, opt, "cpu");
      const omniflux::ProcessGroup& g = par->world();
      auto fail = [&](const std::string& what) { failures[r] += what + "; "; };
      // all_to_all: rank r sends (j + 1) rows of value 10 r + j to rank j; receives (r + 1) rows from each.
      std::vector<at::Tensor> parts;
      std::vector<int64_t> send, recv;
      for (int j = 0; j < kWorld; ++j) {
        parts.push_back(at::full({j + 1, 2}, 10.0 * r + j));
        send.push_back(j + 1);
        recv.push_back(r + 1);
      }
      at::Tensor got = g.all_to_all(at::cat(parts), send, recv);
      std::vector<at::Tensor> want;
      for (int i = 0; i < kWorld; ++i) want.push_back(at::full({r + 1, 2}, 10.0 * i + r));
      if (!at::equal(got, at::cat(want))) fail("all_to_all");
      // all_gather along dim 1 with r + 1 columns per rank.
      at::Tensor gathered = g.all_gather(at::full({2, r + 1}, double(r)), 1);
      std::vector<at::Tensor> cols;
      for (int i = 0; i < kWorld; ++i) cols.push_back(at::full({2, i + 1}, double(i)));
      if (!at::equal(gathered, at::cat(cols, 1))) fail("all_gather");
      at::Tensor sum = at::full({4}, double(r + 1));
      g.all_reduce_sum(sum);
      if (!at::equal(sum, at::full({4}, 6.0))) fail("all_reduce_sum");
      at::Tensor b = r == 1 ? at::arange(5, at::kFloat) : at::zeros({5});
      g.broadcast(b, 1);
      if (!at::equal(b, at::arange(5, at::kFloat))) fail("broadcast");
      // Shapes that disagree: split sizes that do not match the input are refused before sending.
      try {
        (void)g.all_to_all(at::zeros({2, 2}), {1, 1, 1}, {1, 1, 1});
        fail("bad splits accepted");
      } catch (const omniflux::Error&) {
      }
      g.barrier();
    } catch (const std::exception& e) {
      failures[r] += std::string("threw: ") + e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  close(fd);
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(failures[r], "") << "rank " << r;
}

// nn::ulysses_attention on 2 ranks (threads over Gloo) with an uneven split equals attention over
// the whole sequence in one process; heads that do not divide are refused.
TEST(Distributed, UlyssesAttentionEqualsWholeAttention) {
  at::manual_seed(11);
  const at::Tensor q = at::randn({2, 4, 7, 8}), k = at::randn({2, 4, 7, 8}), v = at::randn({2, 4, 7, 8});
  const at::Tensor whole = omniflux::nn::attention(q, k, v);
  const std::vector<int64_t> lens = {4, 3};
  int port = 0;
  const int fd = listening_socket(&port);
  std::vector<at::Tensor> out(2);
  std::vector<std::string> failures(2);
  auto rank_main = [&](int r) {
    try {
      omniflux::LaunchEnv env;
      env.launched = true, env.rank = r, env.world_size = 2, env.master_addr = "127.0.0.1", env.master_port = port;
      if (r == 0) env.master_listen_fd = fd;
      omniflux::ParallelOptions opt;
      opt.timeout_s = 60;
      auto par = omniflux::Parallel::init(env, opt, "cpu");
      const int64_t begin = r == 0 ? 0 : 4, n = lens[static_cast<size_t>(r)];
      out[static_cast<size_t>(r)] = omniflux::nn::ulysses_attention(par->world(), lens, q.slice(2, begin, begin + n),
                                                                     k.slice(2, begin, begin + n), v.slice(2, begin, begin + n));
      try {
        (void)omniflux::nn::ulysses_attention(par->world(), lens, q.slice(1, 0, 3).slice(2, begin, begin + n),
                                              k.slice(1, 0, 3).slice(2, begin, begin + n), v.slice(1, 0, 3).slice(2, begin, begin + n));
        failures[static_cast<size_t>(r)] += "3 heads over 2 ranks accepted; ";
      } catch (const omniflux::Error&) {
      }
    } catch (const std::exception& e) {
      failures[static_cast<size_t>(r)] += e.what();
    }
  };
  std::thread t0(rank_main, 0), t1(rank_main, 1);
  t0.join();
  t1.join();
  close(fd);
  ASSERT_EQ(failures[0], "");
  ASSERT_EQ(failures[1], "");
  EXPECT_TRUE(at::allclose(at::cat({out[0], out[1]}, 2), whole, 1e-5, 1e-6));
}

// Simulated ranks count what a rank would send and return results of the right shape.
TEST(Distributed, SimulatedRanksCountTraffic) {
  omniflux::ParallelOptions opt;
  opt.cfg = 2;
  auto par = omniflux::Parallel::simulate(8, opt, 5);
  EXPECT_EQ(par->inner().size(), 4);
  EXPECT_EQ(par->inner().rank(), 1);
  EXPECT_EQ(par->cfg().size(), 2);
  EXPECT_EQ(par->cfg().rank(), 1);
  // 10 float rows of 3: 2 + 3 + 1 + 4 rows go out, the 3 to itself (inner rank 1) stay.
  at::Tensor out = par->inner().all_to_all(at::zeros({10, 3}), {2, 3, 1, 4}, {5, 5, 5, 5});
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{20, 3}));
  EXPECT_EQ(par->traffic().bytes, 7 * 3 * 4);
  at::Tensor g = par->cfg().all_gather(at::zeros({1, 6}), 0);
  EXPECT_EQ(g.sizes().vec(), (std::vector<int64_t>{2, 6}));
  at::Tensor s = at::zeros({8});
  par->inner().all_reduce_sum(s);  // ring: 2 (P - 1) / P of the bytes
  EXPECT_EQ(par->traffic().calls, 3);
  EXPECT_EQ(par->traffic().bytes, 7 * 3 * 4 + 6 * 4 + 2 * 3 * 32 / 4);
}

// ---- omniflux-server with several ranks --------------------------------------------------------------

using nlohmann::json;
using server_test::parse_sse;
using server_test::post_stream;
using server_test::Server;
using server_test::Streamed;
using Clock = std::chrono::steady_clock;

std::vector<std::string> server_models(std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"--uniworld", (tiny() / "uniworld-v1").string(), "--flux", (tiny() / "flux.1-dev").string(),
                                "--siglip", (tiny() / "siglip2").string(), "--xomni", (tiny() / "x-omni").string(),
                                "--serve-flux", "--threads", "1", "--max-steps", "1000"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

json post(const Server& s, const std::string& path, const json& body, int* status = nullptr) {
  auto r = s.client().Post(path, body.dump(), "application/json");
  if (!r) {
    ADD_FAILURE() << "no response to " << path << "\n" << s.log();
    return json();
  }
  if (status) *status = r->status;
  else EXPECT_EQ(r->status, 200) << r->body << "\n" << s.log();
  return json::parse(r->body, nullptr, false);
}

json chat(const std::string& model, const std::string& text, int max_tokens, std::optional<uint64_t> seed) {
  json j = {{"model", model}, {"max_tokens", max_tokens}, {"temperature", 1.0},
            {"messages", json::array({{{"role", "user"}, {"content", text}}})}};
  if (seed) j["seed"] = *seed;
  return j;
}

bool wait_idle(const Server& s, int seconds) {
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end) {
    auto r = s.client(10).Get("/health");
    if (r && r->status == 200) {
      json h = json::parse(r->body);
      if (h["queue"]["running"] == 0 && h["queue"]["waiting"] == 0) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Every process below `root` (its ranks under --nproc), from /proc.
std::vector<pid_t> descendants(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> all;  // pid, parent
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
      if (pid <= 0) continue;
      const std::string stat = read_bytes("/proc/" + std::string(e->d_name) + "/stat");
      const size_t close_paren = stat.rfind(')');
      if (close_paren == std::string::npos) continue;
      char state = 0;
      int ppid = 0;
      if (std::sscanf(stat.c_str() + close_paren + 1, " %c %d", &state, &ppid) == 2) all.push_back({pid, ppid});
    }
    closedir(d);
  }
  std::vector<pid_t> out = {root};
  for (size_t i = 0; i < out.size(); ++i)
    for (const auto& [pid, ppid] : all)
      if (ppid == out[i]) out.push_back(pid);
  out.erase(out.begin());
  return out;
}

bool alive(pid_t pid) {
  const std::string stat = read_bytes("/proc/" + std::to_string(pid) + "/stat");
  const size_t close_paren = stat.rfind(')');
  return close_paren != std::string::npos && stat.size() > close_paren + 2 && stat[close_paren + 2] != 'Z';
}

// The request rank 0 sends to the others comes back field for field (every field set away from its
// default), and a cut or foreign payload is an Error, never a different request.
TEST(DistributedServer, RequestsTravelExactly) {
  using namespace omniflux::server;
  ImageRequest r;
  r.model = ModelId::XOmni;
  r.edit = r.stream = true;
  r.prompt = std::string("a \xff\xfe not-UTF-8 prompt\0with a zero", 32);
  r.images = {gradient_image(3, 2, 1), gradient_image(5, 7, 2)};
  r.width = 48, r.height = 80, r.n = 3, r.seed = 0xFEDCBA9876543210ull, r.steps = 17, r.guidance = 0.1 + 0.2;
  r.negative_prompt = "blurry";
  r.true_cfg_scale = -0.0;
  r.use_t5 = false, r.snap = true;
  r.temperature = 1.0 / 3, r.top_p = 0.9, r.min_p = 1e-300, r.decoder_cfg_scale = 2.5, r.decoder_cfg_scale_2 = 7.25;
  r.top_k = 40;
  r.output_format = "jpeg", r.output_compression = 55;
  const ImageRequest b = decode_image_request(encode_request(r));
  EXPECT_EQ(b.model, r.model);
  EXPECT_TRUE(b.edit && b.stream);
  EXPECT_EQ(b.prompt, r.prompt);
  ASSERT_EQ(b.images.size(), 2u);
  EXPECT_EQ(b.images[1].width, 5);
  EXPECT_EQ(b.images[1].height, 7);
  EXPECT_EQ(b.images[1].rgb, r.images[1].rgb);
  EXPECT_EQ(std::vector<int64_t>({b.width, b.height, b.n, b.steps, b.output_compression}), std::vector<int64_t>({48, 80, 3, 17, 55}));
  EXPECT_EQ(b.seed, r.seed);
  EXPECT_EQ(b.guidance, r.guidance);  // bit for bit
  EXPECT_EQ(b.negative_prompt, r.negative_prompt);
  ASSERT_TRUE(b.true_cfg_scale);
  EXPECT_TRUE(std::signbit(*b.true_cfg_scale));
  EXPECT_EQ(b.use_t5, std::optional<bool>(false));
  EXPECT_EQ(b.snap, std::optional<bool>(true));
  EXPECT_EQ(b.temperature, r.temperature);
  EXPECT_EQ(b.top_p, r.top_p);
  EXPECT_EQ(b.min_p, r.min_p);
  EXPECT_EQ(b.decoder_cfg_scale, r.decoder_cfg_scale);
  EXPECT_EQ(b.decoder_cfg_scale_2, r.decoder_cfg_scale_2);
  EXPECT_EQ(b.top_k, r.top_k);
  EXPECT_EQ(b.output_format, "jpeg");
  EXPECT_EQ(encode_request(b), encode_request(r));

  ChatRequest c;
  c.model = ModelId::UniWorld;
  c.stream = c.include_usage = true;
  c.turns = {omniflux::ChatTurn::text("system", "be brief"),
             {"user", {omniflux::ChatPart::make_text("what is this?"), omniflux::ChatPart::make_image(gradient_image(4, 4, 3))}}};
  c.images = 1;
  c.options.max_new_tokens = 33;
  c.options.temperature = 0.7, c.options.top_p = 0.8, c.options.min_p = 0.05, c.options.repetition_penalty = 1.1;
  c.options.top_k = 5;
  c.options.presence_penalty = 0.25, c.options.frequency_penalty = -0.5;
  c.options.logit_bias = {{7, -100.0}, {9, 2.5}};
  c.options.stop = {"\n\n", "END"};
  c.options.seed = 99;
  c.seed = 12345;
  c.n = 2;
  const ChatRequest d = decode_chat_request(encode_request(c));
  ASSERT_EQ(d.turns.size(), 2u);
  EXPECT_EQ(d.turns[0].role, "system");
  EXPECT_EQ(d.turns[1].parts[0].text, "what is this?");
  EXPECT_TRUE(d.turns[1].parts[1].is_image);
  EXPECT_EQ(d.turns[1].parts[1].image.rgb, c.turns[1].parts[1].image.rgb);
  EXPECT_EQ(d.model, c.model);
  EXPECT_TRUE(d.stream && d.include_usage);
  EXPECT_EQ(d.images, 1);
  EXPECT_EQ(d.options.max_new_tokens, 33);
  EXPECT_EQ(d.options.temperature, c.options.temperature);
  EXPECT_EQ(d.options.top_p, c.options.top_p);
  EXPECT_EQ(d.options.min_p, c.options.min_p);
  EXPECT_EQ(d.options.repetition_penalty, c.options.repetition_penalty);
  EXPECT_EQ(d.options.top_k, c.options.top_k);
  EXPECT_EQ(d.options.presence_penalty, 0.25);
  EXPECT_EQ(d.options.frequency_penalty, -0.5);
  EXPECT_EQ(d.options.logit_bias, c.options.logit_bias);
  EXPECT_EQ(d.options.stop, c.options.stop);
  EXPECT_EQ(d.options.seed, 99u);
  EXPECT_EQ(d.seed, c.seed);
  EXPECT_EQ(d.n, 2);
  EXPECT_EQ(encode_request(d), encode_request(c));

  const std::string bytes = encode_request(r);
  EXPECT_THROW(decode_image_request(bytes.substr(0, bytes.size() - 1)), omniflux::Error);
  EXPECT_THROW(decode_image_request(bytes + "x"), omniflux::Error);
  EXPECT_THROW(decode_chat_request(bytes), omniflux::Error);  // an image request is not a chat
}

// The generation requests compared below: each model, the seeds fixed.
std::vector<json> image_requests() {
  return {{{"model", "flux.1-dev"}, {"prompt", "a fox"}, {"size", "64x64"}, {"steps", 3}, {"seed", 7}},
          {{"model", "uniworld-v1"}, {"prompt", "a red cube"}, {"size", "64x64"}, {"steps", 3}, {"seed", 5}, {"n", 2}},
          {{"model", "x-omni"}, {"prompt", "a cube"}, {"size", "64x48"}, {"steps", 2}, {"seed", 2}}};
}

std::vector<json> chat_requests() {
  return {chat("x-omni", "What is a cube?", 12, 3), chat("uniworld-v1", "Say something.", 10, 4)};
}

// Two PNGs of a response: the same parameters chunk and the same pixels, within the tolerance above
// (sequence parallelism reorders fp32 sums; see the top of this file). Counts the identical ones.
int g_identical_pngs = 0, g_compared_pngs = 0;
void expect_same_png(const std::string& one_b64, const std::string& many_b64, const std::string& what) {
  SCOPED_TRACE(what);
  ++g_compared_pngs;
  if (one_b64 == many_b64) {
    ++g_identical_pngs;
    return;
  }
  const auto a = omniflux::server::base64_decode(one_b64), b = omniflux::server::base64_decode(many_b64);
  ASSERT_TRUE(a && b);
  auto bytes = [](const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); };
  EXPECT_EQ(omniflux::read_png_text(bytes(*a), a->size(), "one"), omniflux::read_png_text(bytes(*b), b->size(), "many"));
  const omniflux::Image x = omniflux::decode_image(bytes(*a), a->size(), "one"), y = omniflux::decode_image(bytes(*b), b->size(), "many");
  ASSERT_EQ(x.rgb.size(), y.rgb.size());
  int most = 0;
  for (size_t i = 0; i < x.rgb.size(); ++i) most = std::max(most, std::abs(int(x.rgb[i]) - int(y.rgb[i])));
  EXPECT_LE(most, 1) << "largest pixel difference";
}

TEST(DistributedServer, AnswersEqualOneProcess) {
  std::vector<json> one_images, one_chats;
  {
    Server one(server_models());
    ASSERT_GT(one.port(), 0);
    for (const json& r : image_requests()) one_images.push_back(post(one, "/v1/images/generations", r));
    for (const json& r : chat_requests()) one_chats.push_back(post(one, "/v1/chat/completions", r));
    EXPECT_EQ(one.stop(), 0);
  }
  for (int nproc : {2, 4}) {
    SCOPED_TRACE(std::to_string(nproc) + " ranks");
    Server many(server_models({"--nproc", std::to_string(nproc)}));
    ASSERT_GT(many.port(), 0);
    const std::vector<json> images = image_requests(), chats = chat_requests();
    for (size_t i = 0; i < images.size(); ++i) {
      const json got = post(many, "/v1/images/generations", images[i]);
      ASSERT_EQ(got["data"].size(), one_images[i]["data"].size()) << images[i];
      for (size_t k = 0; k < got["data"].size(); ++k)
        expect_same_png(one_images[i]["data"][k]["b64_json"], got["data"][k]["b64_json"], images[i].dump() + " image " + std::to_string(k));
      EXPECT_EQ(got["usage"], one_images[i]["usage"]);
    }
    for (size_t i = 0; i < chats.size(); ++i) {
      const json got = post(many, "/v1/chat/completions", chats[i]);
      EXPECT_EQ(got["choices"], one_chats[i]["choices"]) << chats[i];
      EXPECT_EQ(got["usage"], one_chats[i]["usage"]);
    }
    // no seed: rank 0 draws one for every rank (two answers in a row, each complete)
    for (int k = 0; k < 2; ++k) EXPECT_EQ(post(many, "/v1/chat/completions", chat("x-omni", "Hello", 8, std::nullopt))["usage"]["completion_tokens"], 8);
    EXPECT_EQ(many.stop(), 0) << many.log();
    std::printf("%d ranks: %d of %d PNGs byte-identical to one process's\n", nproc,
                g_identical_pngs, g_compared_pngs);
    g_identical_pngs = g_compared_pngs = 0;
  }
}

TEST(DistributedServer, StreamsAndCancellationsKeepTheRanksInStep) {
  // A short --dist-timeout: ranks out of step fail within seconds instead of 10 minutes.
  Server s(server_models({"--nproc", "2", "--dist-timeout", "20"}));
  ASSERT_GT(s.port(), 0);
  const json plain = {{"model", "uniworld-v1"}, {"prompt", "a red cube"}, {"size", "64x64"}, {"steps", 4}, {"seed", 5}};
  const std::string expected = post(s, "/v1/images/generations", plain)["data"][0]["b64_json"];
  // streamed: every denoising step in order, the same image, then [DONE]
  json streamed = plain;
  streamed["stream"] = true;
  Streamed st = post_stream(s, "/v1/images/generations", streamed);
  EXPECT_EQ(st.status, 200);
  auto events = parse_sse(st.body);
  ASSERT_GE(events.size(), 2u) << st.body;
  EXPECT_EQ(events.back().data, "[DONE]");
  int64_t last_step = 0;
  std::string image;
  for (const auto& e : events) {
    if (e.data == "[DONE]") continue;
    json j = json::parse(e.data);
    if (j["type"] == "image_generation.partial_progress" && j.value("stage", "") == "denoise") {
      EXPECT_GE(j["step"].get<int64_t>(), last_step);
      last_step = j["step"];
    }
    if (j["type"] == "image_generation.completed") image = j["b64_json"];
  }
  EXPECT_EQ(image, expected);
  // a streamed chat equals the answer in one piece
  json c = chat("x-omni", "What is a cube?", 12, 3);
  const std::string answer = post(s, "/v1/chat/completions", c)["choices"][0]["message"]["content"];
  c["stream"] = true;
  st = post_stream(s, "/v1/chat/completions", c);
  std::string pieces;
  for (const auto& e : parse_sse(st.body)) {
    if (e.data == "[DONE]") continue;
    const json d = json::parse(e.data)["choices"][0]["delta"];
    if (d.contains("content")) pieces += d["content"].get<std::string>();
  }
  EXPECT_EQ(pieces, answer);

  // The client leaves after the second of 1000 steps: every rank stops at the same step, and the
  // next requests run normally (a rank still in the old request would take rank 0's next message
  // for a collective of the DiT: an error or a timeout).
  const json long_job = {{"model", "uniworld-v1"}, {"prompt", "slow"}, {"size", "256x256"}, {"steps", 1000}, {"stream", true}};
  st = post_stream(s, "/v1/images/generations", long_job,
                   [](const std::string& body) { return body.find("\"stage\":\"denoise\",\"step\":2") == std::string::npos; });
  EXPECT_TRUE(wait_idle(s, 30)) << "the job still runs after its client left\n" << s.log();
  EXPECT_EQ(post(s, "/v1/images/generations", plain)["data"][0]["b64_json"], expected) << s.log();
  // X-Omni's token loop: the client leaves at the first code
  st = post_stream(s, "/v1/images/generations", {{"model", "x-omni"}, {"prompt", "p"}, {"size", "960x960"}, {"n", 4}, {"stream", true}},
                   [](const std::string& body) { return body.find("\"stage\":\"tokens\"") == std::string::npos; });
  EXPECT_TRUE(wait_idle(s, 30)) << "X-Omni kept sampling after its client left\n" << s.log();
  // a chat stream the client leaves after its first piece
  json long_chat = chat("x-omni", "Tell me a long story.", 400, 9);
  long_chat["stream"] = true;
  post_stream(s, "/v1/chat/completions", long_chat, [](const std::string& body) { return body.find("\"content\"") == std::string::npos; });
  EXPECT_TRUE(wait_idle(s, 30)) << s.log();
  EXPECT_EQ(post(s, "/v1/chat/completions", chat("x-omni", "What is a cube?", 12, 3))["choices"][0]["message"]["content"], answer);
  EXPECT_EQ(post(s, "/v1/images/generations", plain)["data"][0]["b64_json"], expected);
  EXPECT_EQ(s.stop(), 0) << s.log();
  EXPECT_EQ(s.log().find("cannot follow rank 0"), std::string::npos) << s.log();
}

TEST(DistributedServer, IdleRanksOutliveTheCollectiveTimeout) {
  // Rank 0 sends a heartbeat every quarter of --dist-timeout while idle: after three timeouts of
  // idling, every rank still answers.
  Server s({"--xomni", (tiny() / "x-omni").string(), "--threads", "1", "--nproc", "2", "--dist-timeout", "4"});
  ASSERT_GT(s.port(), 0);
  std::this_thread::sleep_for(std::chrono::seconds(12));
  EXPECT_EQ(post(s, "/v1/chat/completions", chat("x-omni", "Hello", 6, 1))["usage"]["completion_tokens"], 6) << s.log();
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(DistributedServer, SigtermEndsEveryRank) {
  // idle, 4 ranks
  {
    Server s({"--xomni", (tiny() / "x-omni").string(), "--threads", "1", "--nproc", "4"});
    ASSERT_GT(s.port(), 0);
    const std::vector<pid_t> ranks = descendants(s.pid());
    EXPECT_EQ(ranks.size(), 4u);
    EXPECT_EQ(post(s, "/v1/chat/completions", chat("x-omni", "Hello", 4, 1))["usage"]["completion_tokens"], 4);
    EXPECT_EQ(s.stop(SIGTERM, 60), 0) << s.log();
    for (pid_t p : ranks) EXPECT_FALSE(alive(p)) << "rank process " << p << " outlived the server";
    const std::string log = s.log();
    for (int r = 0; r < 4; ++r) EXPECT_NE(log.find("[rank " + std::to_string(r) + "]: stopped"), std::string::npos) << log;
  }
  // mid-request, 2 ranks: the running request ends cancelled
  {
    Server s(server_models({"--nproc", "2"}));
    ASSERT_GT(s.port(), 0);
    const std::vector<pid_t> ranks = descendants(s.pid());
    EXPECT_EQ(ranks.size(), 2u);
    server_test::SlowStream slow(s);
    EXPECT_TRUE(slow.started());
    EXPECT_EQ(s.stop(SIGTERM, 60), 0) << s.log();
    const Streamed& st = slow.result();
    auto events = parse_sse(st.body);
    ASSERT_GE(events.size(), 2u) << st.body;
    EXPECT_EQ(json::parse(events[events.size() - 2].data)["error"]["code"], "cancelled") << st.body;
    for (pid_t p : ranks) EXPECT_FALSE(alive(p)) << "rank process " << p << " outlived the server";
  }
}

TEST(DistributedServer, ARankThatDiesFailsTheRequestAndTheServer) {
  // Each rank started as a launcher would, so that rank 1 can be killed alone.
  int port = 0;
  const int fd = listening_socket(&port);
  std::vector<std::string> args = server_models({"--dist-timeout", "60"});
  auto env0 = rank_env(0, 2, port);
  env0.push_back("OMNIFLUX_MASTER_LISTEN_FD=" + std::to_string(fd));
  std::vector<std::string> cmd1 = {bin("omniflux-server")};
  cmd1.insert(cmd1.end(), args.begin(), args.end());
  cmd1.insert(cmd1.end(), {"--port", "0"});
  Child rank1(cmd1, rank_env(1, 2, port));
  Server rank0(args, env0);
  close(fd);
  ASSERT_GT(rank0.port(), 0);
  Streamed st;
  std::thread client([&] {
    st = post_stream(rank0, "/v1/images/generations",
                     {{"model", "uniworld-v1"}, {"prompt", "slow"}, {"size", "256x256"}, {"steps", 1000}, {"stream", true}},
                     [&](const std::string& body) {
                       if (body.find("\"stage\":\"denoise\",\"step\":2") != std::string::npos) rank1.signal(SIGKILL);
                       return true;
                     });
  });
  client.join();
  auto events = parse_sse(st.body);
  ASSERT_GE(events.size(), 2u) << st.body;
  const json err = json::parse(events[events.size() - 2].data);
  EXPECT_EQ(err["error"]["code"], "rank_failed") << st.body;
  EXPECT_NE(err["error"]["message"].get<std::string>().find("a collective failed"), std::string::npos) << st.body;
  // rank 0 stops by itself, with an error
  const auto end = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < end && alive(rank0.pid())) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(alive(rank0.pid())) << "rank 0 still runs with its peer gone\n" << rank0.log();
  EXPECT_EQ(rank0.stop(SIGTERM, 10), 1) << rank0.log();  // already exited: this only collects the status
  EXPECT_NE(rank0.log().find("can no longer run requests together"), std::string::npos) << rank0.log();
  rank1.wait();
}

}  // namespace
