// c10d process groups for omniflux::Parallel (include/omniflux/distributed.h). The c10d headers
// stay in this file: OMNIFLUX_WITH_GLOO / OMNIFLUX_WITH_NCCL say which backends CMake found headers
// for (Gloo's from Debian's libgloo-dev; only the opaque device handle crosses into gloo's types,
// the backend itself is LibTorch's own build).
#include "omniflux/distributed.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <string>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#if OMNIFLUX_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if OMNIFLUX_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "omniflux/error.h"

namespace omniflux {

bool have_gloo() { return OMNIFLUX_WITH_GLOO; }
bool have_nccl() { return OMNIFLUX_WITH_NCCL; }

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, int lo, int hi, bool required, int fallback) {
  auto v = env(name);
  if (!v) {
    if (required)
      throw Error("a launcher variable is missing", std::string("environment variable ") + name,
                  "set, as torchrun sets it (or run one process without RANK and WORLD_SIZE)", "unset");
    return fallback;
  }
  errno = 0;
  char* end = nullptr;
  long x = std::strtol(v->c_str(), &end, 10);
  if (v->empty() || *end || errno || x < lo || x > hi)
    throw Error("invalid launcher variable", std::string("environment variable ") + name,
                "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", "'" + *v + "'");
  return static_cast<int>(x);
}

// The first line of a c10d / Gloo / NCCL message (they append C++ stack traces).
std::string first_line(const std::string& s) {
  auto p = s.find('\n');
  return p == std::string::npos ? s : s.substr(0, p);
}

}  // namespace

LaunchEnv LaunchEnv::from_environment() {
  LaunchEnv e;
  e.launched = env("RANK") || env("WORLD_SIZE");
  if (!e.launched) return e;
  e.world_size = env_int("WORLD_SIZE", 1, 65536, true, 1);
  e.rank = env_int("RANK", 0, e.world_size - 1, true, 0);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, e.world_size, false, e.world_size);
  e.local_rank = env_int("LOCAL_RANK", 0, e.local_world_size - 1, false, e.rank % e.local_world_size);
  if (e.world_size > 1) {
    auto addr = env("MASTER_ADDR");
    if (!addr || addr->empty())
      throw Error("a launcher variable is missing", "environment variable MASTER_ADDR",
                  "the host of rank 0, as torchrun sets it", addr ? "empty" : "unset");
    e.master_addr = *addr;
    e.master_port = env_int("MASTER_PORT", 1, 65535, true, 0);
    if (e.rank == 0) e.master_listen_fd = env_int("OMNIFLUX_MASTER_LISTEN_FD", 0, INT_MAX, false, -1);
    e.agent_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  }
  return e;
}

std::vector<int64_t> split_sizes(int64_t n, int64_t parts) {
  if (parts < 1 || n < 0) throw Error("invalid split", "split_sizes", "n >= 0, parts >= 1", std::to_string(n) + ", " + std::to_string(parts));
  std::vector<int64_t> s(static_cast<size_t>(parts), n / parts);
  for (int64_t i = 0; i < n % parts; ++i) ++s[static_cast<size_t>(i)];
  return s;
}

struct ProcessGroup::Impl {
  int rank = 0, size = 1;
  std::string name;  // "world", "inner", "cfg"
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout{600000};
  bool simulated = false;
  // NCCL: wait() only orders the current CUDA stream after the collective, and NCCL's watchdog
  // enforces the timeout; a host-side wait with a timeout would block the host at every call.
  bool device_ordered = false;
  std::atomic<int64_t> calls{0}, bytes{0};

  void count(int64_t sent) {
    ++calls;
    bytes += sent;
  }

  // Waits for `work`, turning c10d's errors into one that says which group and call failed.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) const {
    try {
      if (device_ordered) {
        work->wait();
        return;
      }
      if (!work->wait(timeout))
        throw Error("a collective timed out", std::string("ProcessGroup(") + name + ")." + what,
                    "every rank to reach it within " + std::to_string(timeout.count() / 1000) + " s", "rank " + std::to_string(rank) + " waited");
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error("a collective failed (another rank exited, hung past the timeout, or disagrees on shapes)",
                  std::string("ProcessGroup(") + name + ")." + what + " on rank " + std::to_string(rank) + " of " + std::to_string(size),
                  "all " + std::to_string(size) + " ranks of the group to take part", first_line(e.what()));
    }
  }
};

ProcessGroup::ProcessGroup() : impl_(std::make_shared<Impl>()) {}
ProcessGroup::ProcessGroup(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
int ProcessGroup::rank() const { return impl_->rank; }
int ProcessGroup::size() const { return impl_->size; }

at::Tensor ProcessGroup::all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_rows,
                                    const std::vector<int64_t>& recv_rows) const {
  const auto p = static_cast<size_t>(impl_->size);
  int64_t ns = 0, nr = 0;
  for (int64_t r : send_rows) ns += r;
  for (int64_t r : recv_rows) nr += r;
  if (send_rows.size() != p || recv_rows.size() != p || ns != input.size(0))
    throw Error("split sizes do not match the group or the input", "ProcessGroup.all_to_all",
                std::to_string(p) + " sizes summing to " + std::to_string(input.size(0)), std::to_string(send_rows.size()) + " summing to " + std::to_string(ns));
  std::vector<int64_t> shape = input.sizes().vec();
  shape[0] = nr;
  if (p == 1) return input.clone();
  if (impl_->simulated) {
    const int64_t row = input.numel() / std::max<int64_t>(1, input.size(0)) * input.element_size();
    impl_->count((ns - send_rows[static_cast<size_t>(impl_->rank)]) * row);
    return at::empty(shape, input.options());
  }
  at::Tensor in = input.contiguous();
  at::Tensor out = at::empty(shape, input.options());
  std::vector<int64_t> s = send_rows, r = recv_rows;
  impl_->wait(impl_->backend->alltoall_base(out, in, r, s), "all_to_all");
  return out;
}

at::Tensor ProcessGroup::all_gather(const at::Tensor& t, int64_t dim) const {
  if (impl_->size == 1) return t;
  dim = dim < 0 ? dim + t.dim() : dim;
  if (impl_->simulated) {
    impl_->count((impl_->size - 1) * static_cast<int64_t>(t.nbytes()));
    return at::cat(std::vector<at::Tensor>(static_cast<size_t>(impl_->size), t), dim);
  }
  // Sizes along dim first, then every part padded to the largest (Gloo's allgather wants equal
  // shapes).
  at::Tensor len = at::full({1}, t.size(dim), at::TensorOptions().dtype(at::kLong).device(t.device()));
  std::vector<at::Tensor> lens_out(static_cast<size_t>(impl_->size));
  for (auto& x : lens_out) x = at::empty_like(len);
  {
    std::vector<std::vector<at::Tensor>> o{lens_out};
    std::vector<at::Tensor> i{len};
    impl_->wait(impl_->backend->allgather(o, i), "all_gather(sizes)");
    lens_out = o[0];
  }
  std::vector<int64_t> lens;
  int64_t most = 0;
  for (auto& x : lens_out) lens.push_back(x.cpu().item<int64_t>()), most = std::max(most, lens.back());
  at::Tensor padded = t;
  if (t.size(dim) < most) {
    std::vector<int64_t> ps = t.sizes().vec();
    ps[static_cast<size_t>(dim)] = most - t.size(dim);
    padded = at::cat({t, at::zeros(ps, t.options())}, dim);
  }
  padded = padded.contiguous();
  std::vector<at::Tensor> parts(static_cast<size_t>(impl_->size));
  for (auto& x : parts) x = at::empty_like(padded);
  std::vector<std::vector<at::Tensor>> o{parts};
  std::vector<at::Tensor> i{padded};
  impl_->wait(impl_->backend->allgather(o, i), "all_gather");
  for (size_t j = 0; j < parts.size(); ++j) parts[j] = o[0][j].narrow(dim, 0, lens[j]);
  return at::cat(parts, dim);
}

void ProcessGroup::all_reduce_sum(at::Tensor& t) const {
  if (impl_->size == 1) return;
  if (impl_->simulated) return impl_->count(2 * (impl_->size - 1) * static_cast<int64_t>(t.nbytes()) / impl_->size);
  if (!t.is_contiguous())
    throw Error("all_reduce_sum needs a contiguous tensor", "ProcessGroup.all_reduce_sum", "contiguous", "strided");
  std::vector<at::Tensor> v{t};
  impl_->wait(impl_->backend->allreduce(v), "all_reduce_sum");
}

void ProcessGroup::broadcast(at::Tensor& t, int root) const {
  if (impl_->size == 1) return;
  if (impl_->simulated) return impl_->count(impl_->rank == root ? static_cast<int64_t>(t.nbytes()) : 0);
  if (!t.is_contiguous())
    throw Error("broadcast needs a contiguous tensor", "ProcessGroup.broadcast", "contiguous", "strided");
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  impl_->wait(impl_->backend->broadcast(v, o), "broadcast");
}

void ProcessGroup::barrier() const {
  if (impl_->size == 1 || impl_->simulated) return;
  impl_->wait(impl_->backend->barrier(), "barrier");
}

struct Parallel::Impl {
  LaunchEnv env;
  ParallelOptions opt;
  bool simulated = false;
  c10::intrusive_ptr<c10d::Store> store;
  std::shared_ptr<ProcessGroup::Impl> world_impl, inner_impl, cfg_impl;  // for traffic()
  ProcessGroup world, inner, cfg;
};

Parallel::Parallel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Parallel::~Parallel() = default;
bool Parallel::simulated() const { return impl_->simulated; }
Traffic Parallel::traffic() const {
  Traffic t;
  for (const auto* g : {impl_->world_impl.get(), impl_->inner_impl.get(), impl_->cfg_impl.get()})
    if (g) t.calls += g->calls, t.bytes += g->bytes;
  return t;
}
int Parallel::rank() const { return impl_->env.rank; }
int Parallel::world_size() const { return impl_->env.world_size; }
const ParallelOptions& Parallel::options() const { return impl_->opt; }
const ProcessGroup& Parallel::world() const { return impl_->world; }
const ProcessGroup& Parallel::inner() const { return impl_->inner; }
const ProcessGroup& Parallel::cfg() const { return impl_->cfg; }
const ProcessGroup* Parallel::sequence_group() const {
  return impl_->opt.sequence && impl_->inner.size() > 1 ? &impl_->inner : nullptr;
}
const ProcessGroup* Parallel::tensor_group() const {
  return impl_->opt.tensor && impl_->inner.size() > 1 ? &impl_->inner : nullptr;
}

std::pair<at::Tensor, at::Tensor> Parallel::cfg_pair(const std::function<at::Tensor()>& cond,
                                                     const std::function<at::Tensor()>& uncond) const {
  const ProcessGroup& g = impl_->cfg;
  if (g.size() == 1) return {cond(), uncond()};
  at::Tensor mine = g.rank() == 0 ? cond() : uncond();
  at::Tensor both = g.all_gather(mine.unsqueeze(0), 0);
  return {both[0], both[1]};
}

std::pair<at::Tensor, at::Tensor> cfg_pair(const Parallel* p, const std::function<at::Tensor()>& cond,
                                           const std::function<at::Tensor()>& uncond) {
  if (p) return p->cfg_pair(cond, uncond);
  at::Tensor c = cond();
  return {c, uncond()};
}

at::Tensor cfg_rows(const Parallel* p, int64_t n, const std::function<at::Tensor(int64_t, int64_t)>& run) {
  if (!p || p->cfg().size() == 1 || n < 2) return run(0, n);
  const ProcessGroup& g = p->cfg();
  const std::vector<int64_t> sizes = split_sizes(n, g.size());
  int64_t begin = 0;
  for (int j = 0; j < g.rank(); ++j) begin += sizes[static_cast<size_t>(j)];
  return g.all_gather(run(begin, begin + sizes[static_cast<size_t>(g.rank())]), 0);
}

namespace {

c10::intrusive_ptr<c10d::Backend> make_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                               bool cuda, std::chrono::milliseconds timeout) {
  if (cuda) {
#if OMNIFLUX_WITH_NCCL
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, o);
#else
    throw Error("this build has no NCCL backend", "Parallel.init", "a CUDA LibTorch with nccl.h at build time", "none");
#endif
  }
#if OMNIFLUX_WITH_GLOO
  auto o = c10d::ProcessGroupGloo::Options::create(timeout);
  o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, o);
#else
  throw Error("this build has no Gloo backend", "Parallel.init", "gloo headers (libgloo-dev) at build time", "none");
#endif
}

}  // namespace

namespace {

void check_layout(int w, const ParallelOptions& opt) {
  if (w < 1) throw Error("invalid world size", "Parallel", ">= 1", std::to_string(w));
  if (opt.cfg != 1 && opt.cfg != 2)
    throw Error("invalid CFG parallel degree", "ParallelOptions.cfg", "1 or 2", std::to_string(opt.cfg));
  if (w % opt.cfg)
    throw Error("the world size does not divide into CFG pairs", "ParallelOptions.cfg",
                "a world size that is a multiple of " + std::to_string(opt.cfg), std::to_string(w));
  if (!(opt.timeout_s > 0 && opt.timeout_s <= 86400))
    throw Error("invalid timeout", "ParallelOptions.timeout_s", "(0, 86400] seconds", std::to_string(opt.timeout_s));
}

}  // namespace

std::shared_ptr<const Parallel> Parallel::simulate(int world_size, const ParallelOptions& opt, int rank) {
  check_layout(world_size, opt);
  if (rank < 0 || rank >= world_size) throw Error("invalid rank", "Parallel.simulate", "0.." + std::to_string(world_size - 1), std::to_string(rank));
  auto impl = std::make_unique<Impl>();
  impl->env.rank = rank, impl->env.world_size = world_size, impl->env.launched = true;
  impl->opt = opt;
  impl->simulated = true;
  const int inner = world_size / opt.cfg;
  auto group = [&](const char* name, int r, int size) {
    auto g = std::make_shared<ProcessGroup::Impl>();
    g->rank = r, g->size = size, g->name = name, g->simulated = true;
    return g;
  };
  impl->world_impl = group("world", rank, world_size);
  impl->inner_impl = group("inner", rank % inner, inner);
  impl->cfg_impl = group("cfg", rank / inner, opt.cfg);
  impl->world = ProcessGroup(impl->world_impl), impl->inner = ProcessGroup(impl->inner_impl), impl->cfg = ProcessGroup(impl->cfg_impl);
  return std::shared_ptr<const Parallel>(new Parallel(std::move(impl)));
}

std::shared_ptr<const Parallel> Parallel::init(const LaunchEnv& env, const ParallelOptions& opt, const std::string& device) {
  const int w = env.world_size;
  check_layout(w, opt);
  auto impl = std::make_unique<Impl>();
  impl->env = env;
  impl->opt = opt;
  const int inner = w / opt.cfg;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(opt.timeout_s * 1000));
  if (w > 1) {
    const bool cuda = c10::Device(device).is_cuda();
#if OMNIFLUX_WITH_NCCL
    if (cuda) c10::cuda::set_device(static_cast<c10::DeviceIndex>(c10::Device(device).has_index() ? c10::Device(device).index() : env.local_rank));
#endif
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = static_cast<size_t>(w);
    so.waitWorkers = true;
    so.timeout = timeout;
    if (env.master_listen_fd >= 0) so.masterListenFd = env.master_listen_fd;
    try {
      impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    } catch (const std::exception& e) {
      throw Error("cannot reach the other ranks", "Parallel.init: rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port),
                  std::to_string(w) + " ranks within " + std::to_string(timeout.count() / 1000) + " s", first_line(e.what()));
    }
    auto group = [&](const std::string& name, int index, int rank, int size) {
      auto g = std::make_shared<ProcessGroup::Impl>();
      g->rank = rank, g->size = size, g->name = name, g->timeout = timeout, g->device_ordered = cuda;
      if (size > 1) {
        try {
          // Our own key space: torchrun's agent store holds its keys too.
          auto prefixed = c10::make_intrusive<c10d::PrefixStore>("omniflux/" + name + "/" + std::to_string(index), impl->store);
          g->backend = make_backend(prefixed, rank, size, cuda, timeout);
        } catch (const Error&) {
          throw;
        } catch (const std::exception& e) {
          throw Error("cannot build a process group", "Parallel.init: group " + name, "every rank of the group to connect", first_line(e.what()));
        }
      }
      return ProcessGroup(g);
    };
    impl->world = group("world", 0, env.rank, w);
    impl->inner = group("inner", env.rank / inner, env.rank % inner, inner);
    impl->cfg = group("cfg", env.rank % inner, env.rank / inner, opt.cfg);
  }
  return std::shared_ptr<const Parallel>(new Parallel(std::move(impl)));
}

}  // namespace omniflux
