// Several ranks for one command (docs/distributed.md): the --nproc/--cfg-parallel flags, joining
// the ranks a launcher (torchrun, Slurm, Kubernetes) started, and --nproc N, which starts the N
// local ranks itself: the same command line again, with torchrun's variables set.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include <ATen/ATen.h>

#include "omniflux/distributed.h"

namespace omniflux::cli {

namespace {

struct DistFlags {
  int nproc = 0;
  ParallelOptions opt;
};
DistFlags g_dist;
int g_rank = -1;  // set once this process joined its ranks; prefixes error messages

// A socket listening on a free loopback port, for rank 0's rendezvous store to take over.
int listening_socket() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error("cannot open a socket", "--nproc: choosing MASTER_PORT", "", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 1024) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw Error("cannot listen on a free port", "--nproc: choosing MASTER_PORT", "", why);
  }
  return fd;
}

int port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

std::vector<std::string> own_command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  size_t start = 0;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i] == '\0') args.push_back(all.substr(start, i - start)), start = i + 1;
  if (args.empty()) throw Error("cannot read the command line", "/proc/self/cmdline", "the arguments", "nothing");
  return args;
}

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitRuntimeError;
}

// Starts n copies of this command as ranks 0..n-1 on this host and waits for them. When one fails,
// the others are stopped (SIGTERM, then SIGKILL after 10 s): a rank that waits in a collective
// for a dead peer would otherwise wait out the timeout. SIGINT and SIGTERM sent to this process go
// on to every rank, which decides what they mean (the CLIs cancel, the server's rank 0 shuts the
// server down); a terminal's Ctrl-C is not passed on, as the kernel sends it to the ranks too.
// Returns the first failure's status, or 0.
int spawn_local_ranks(int n) {
  const std::vector<std::string> args = own_command_line();
  sigset_t stop_signals, old_mask;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);  // taken by sigtimedwait below
  const int listen_fd = listening_socket();
  const std::string port = std::to_string(port_of(listen_fd));
  std::vector<pid_t> pids;
  const pid_t parent = ::getpid();
  for (int r = 0; r < n; ++r) {
    pid_t pid = ::fork();
    if (pid < 0) {
      for (pid_t p : pids) ::kill(p, SIGTERM);
      ::close(listen_fd);
      throw Error("cannot start a rank", "--nproc", std::to_string(n) + " processes", std::strerror(errno));
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // ranks do not outlive the launcher
      if (::getppid() != parent) ::_exit(kExitRuntimeError);
      pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      if (r == 0) ::setenv("OMNIFLUX_MASTER_LISTEN_FD", std::to_string(listen_fd).c_str(), 1);
      else ::close(listen_fd);
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "rank %d: cannot start %s: %s\n", r, args[0].c_str(), std::strerror(errno));
      ::_exit(kExitRuntimeError);
    }
    pids.push_back(pid);
  }
  ::close(listen_fd);  // rank 0 has it now
  int rc = kExitOk;
  size_t left = pids.size();
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  bool killed = false;
  while (left > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR) break;
    if (pid > 0) {
      for (auto& p : pids)
        if (p == pid) {
          p = -1;
          --left;
          const int code = status_code(status);
          if (code != kExitOk && rc == kExitOk) {
            rc = code;
            for (pid_t q : pids)
              if (q > 0) ::kill(q, SIGTERM);
            stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          }
        }
      continue;
    }
    siginfo_t info{};
    const timespec now{0, 0};
    for (int sig; (sig = ::sigtimedwait(&stop_signals, &info, &now)) > 0;)
      if (info.si_code != SI_KERNEL)
        for (pid_t q : pids)
          if (q > 0) ::kill(q, sig);
    if (!killed && std::chrono::steady_clock::now() > stop_deadline) {
      for (pid_t q : pids)
        if (q > 0) ::kill(q, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return rc;
}

}  // namespace

void add_parallel_flags(Parser& p) {
  p.group("several processes (docs/distributed.md)");
  p.integer("--nproc", &g_dist.nproc, 0, 1024, "N",
            "start N ranks on this host (as torchrun --nproc-per-node N would); 0 = one process, or the ranks a launcher started");
  p.integer("--cfg-parallel", &g_dist.opt.cfg, 1, 2, "N", "2: the conditional and unconditional passes on different ranks");
  p.toggle("--no-sequence-parallel", &g_dist.opt.sequence, "every rank runs the whole DiT (no Ulysses split)", false);
  p.toggle("--no-tensor-parallel", &g_dist.opt.tensor, "every rank runs the whole language model", false);
  p.number("--dist-timeout", &g_dist.opt.timeout_s, 1, 86400, "S", "seconds a rank waits for the others before failing");
}

int current_rank() { return g_rank; }

bool reads_inputs() {
  const char* r = std::getenv("RANK");
  return !r || std::string(r) == "0";
}

namespace {

// Rank 0's bytes on every rank (a size, then the bytes), on the device the collectives use.
void share_bytes(std::string& bytes, const RuntimeOptions& rt) {
  const ProcessGroup& g = rt.parallel->world();
  const auto dev = rt.torch_device().is_cuda() ? rt.torch_device() : c10::Device(c10::kCPU);
  at::Tensor n = at::full({1}, static_cast<int64_t>(bytes.size()), at::TensorOptions().dtype(at::kLong).device(dev));
  g.broadcast(n, 0);
  const int64_t size = n.cpu().item<int64_t>();
  at::Tensor t = g.rank() == 0 ? at::from_blob(bytes.data(), {size}, at::kByte).to(dev).clone()
                               : at::empty({size}, at::TensorOptions().dtype(at::kByte).device(dev));
  g.broadcast(t, 0);
  if (g.rank() != 0) {
    at::Tensor c = t.cpu().contiguous();
    bytes.assign(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(size));
  }
}

}  // namespace

bool keep_going(const RuntimeOptions& rt) {
  const bool stop = cancel_requested();
  if (!rt.parallel || rt.parallel->world_size() == 1) return !stop;
  const auto dev = rt.torch_device().is_cuda() ? rt.torch_device() : c10::Device(c10::kCPU);
  at::Tensor votes = at::full({1}, stop ? 1 : 0, at::TensorOptions().dtype(at::kLong).device(dev));
  rt.parallel->world().all_reduce_sum(votes);
  return votes.cpu().item<int64_t>() == 0;
}

void share_text(std::string& text, const RuntimeOptions& rt) {
  if (rt.parallel && rt.parallel->world_size() > 1) share_bytes(text, rt);
}

void share_images(std::vector<Image>& images, const RuntimeOptions& rt) {
  if (!rt.parallel || rt.parallel->world_size() == 1) return;
  // count, then per image width, height and the RGB bytes (already decoded and checked on rank 0)
  std::string head = std::to_string(images.size());
  for (const Image& im : images) head += " " + std::to_string(im.width) + " " + std::to_string(im.height);
  share_bytes(head, rt);
  std::istringstream in(head);
  size_t count = 0;
  in >> count;
  images.resize(count);
  for (Image& im : images) {
    in >> im.width >> im.height;
    std::string rgb(im.rgb.begin(), im.rgb.end());
    share_bytes(rgb, rt);
    im.rgb.assign(rgb.begin(), rgb.end());
  }
}

std::shared_ptr<const Parallel> simulated_ranks() {
  const LaunchEnv env = LaunchEnv::from_environment();
  const int n = env.launched ? env.world_size : g_dist.nproc;
  if (n <= 1) return nullptr;
  if (n % g_dist.opt.cfg)
    throw UsageError("the ranks do not divide into CFG pairs", "--cfg-parallel",
                     "a world size divisible by " + std::to_string(g_dist.opt.cfg), std::to_string(n));
  return Parallel::simulate(n, g_dist.opt);
}

void join_ranks(RuntimeOptions& rt) {
  const LaunchEnv env = LaunchEnv::from_environment();
  if (!env.launched) {
    if (g_dist.nproc > 1 && g_dist.nproc % g_dist.opt.cfg)
      throw UsageError("the ranks do not divide into CFG pairs", "--cfg-parallel",
                       "--nproc divisible by " + std::to_string(g_dist.opt.cfg), std::to_string(g_dist.nproc));
    if (g_dist.nproc > 1) throw ExitRequest{spawn_local_ranks(g_dist.nproc)};
    if (g_dist.opt.cfg > 1)
      throw UsageError("CFG parallelism needs several ranks", "--cfg-parallel", "--nproc 2 or more, or a launcher", "one process");
    return;
  }
  if (g_dist.nproc > 0 && g_dist.nproc != env.local_world_size)
    throw UsageError("--nproc disagrees with the launcher", "--nproc", "LOCAL_WORLD_SIZE " + std::to_string(env.local_world_size),
                     std::to_string(g_dist.nproc));
  if (env.world_size % g_dist.opt.cfg)
    throw UsageError("the ranks do not divide into CFG pairs", "--cfg-parallel",
                     "a world size divisible by " + std::to_string(g_dist.opt.cfg), "WORLD_SIZE " + std::to_string(env.world_size));
  // One CUDA device per local rank unless --device names one.
  if (rt.torch_device().is_cuda() && !rt.torch_device().has_index()) rt.device = "cuda:" + std::to_string(env.local_rank);
  // The ranks on a host share its cores: all hardware threads each would oversubscribe them.
  if (rt.num_threads == 0 && env.local_world_size > 1)
    rt.num_threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / env.local_world_size);
  g_rank = env.rank;
  rt.parallel = Parallel::init(env, g_dist.opt, rt.device);
}

}  // namespace omniflux::cli
