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
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "../test_util.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"

namespace fs = std::filesystem;

namespace {

const fs::path& tiny() { return tiny_folders(3, {"flux_1_dev", "uniworld_v1", "siglip2", "x_omni"}); }

struct Result {
  int status = -1;
  std::string err;
  std::vector<float> latents;
  std::optional<omniflux::Image> image;
  std::string codes, text;
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

// Started as a launcher would: each rank its own process with torchrun's variables.
std::vector<std::string> rank_env(int rank, int world, int port) {
  return {"RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world), "LOCAL_RANK=" + std::to_string(rank),
          "LOCAL_WORLD_SIZE=" + std::to_string(world), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

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

}  // namespace
