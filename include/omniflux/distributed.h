#pragma once
// Several processes for one request (docs/distributed.md), on PyTorch's own distributed runtime,
// c10d: NCCL between CUDA devices, Gloo on the CPU. Every rank loads the models and runs the same
// request; the parallel parts split work inside the models:
//   - Ulysses sequence parallelism in the FLUX DiT: each rank holds a slice of the text and image
//     tokens, and an all-to-all around attention gives it whole sequences for a slice of the heads;
//   - CFG parallelism: the conditional and unconditional passes on different ranks;
//   - tensor parallelism in the language models: heads and MLP columns split, one all-reduce per
//     block half.
// The world is laid out as cfg x inner ranks: rank = cfg_index * inner + inner_index. The inner
// group runs sequence parallelism in the DiTs and tensor parallelism in the LMs.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace omniflux {

// What a launcher says about this process, from the variables torchrun (and Slurm or Kubernetes
// set-ups that follow it) set: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT.
struct LaunchEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr;
  int master_port = 0;
  bool launched = false;  // RANK or WORLD_SIZE was set
  // OMNIFLUX_MASTER_LISTEN_FD: a socket already listening on MASTER_PORT that rank 0's store takes
  // over (set by --nproc, so that no other process can take the port between choosing and
  // binding it); -1 = rank 0 binds MASTER_PORT itself.
  int master_listen_fd = -1;
  // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already serves the store on MASTER_PORT,
  // so rank 0 connects to it as the others do.
  bool agent_store = false;

  // No RANK and no WORLD_SIZE: one process. Otherwise every variable must be there and valid;
  // throws Error naming the variable.
  static LaunchEnv from_environment();
};

struct ParallelOptions {
  int cfg = 1;              // 2: the conditional and unconditional passes on different ranks
  bool sequence = true;     // Ulysses sequence parallelism in the DiTs over the inner group
  bool tensor = true;       // tensor parallelism in the language models over the inner group
  double timeout_s = 600;   // a collective that waits longer fails (a rank that died or hangs)
};

// A group of ranks and the collectives the models use. Tensors keep their device; on Gloo they
// are CPU tensors. A collective that fails (a peer exited, the timeout passed) throws Error.
class ProcessGroup {
 public:
  ProcessGroup();  // one rank, no communication
  int rank() const;
  int size() const;

  // Rows (dim 0) of `input`: send_rows[j] go to rank j, in order; returns what the ranks sent
  // here, recv_rows[j] rows from rank j, concatenated in rank order.
  at::Tensor all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& recv_rows) const;
  // Every rank's `t` concatenated along `dim` in rank order; sizes along `dim` may differ.
  at::Tensor all_gather(const at::Tensor& t, int64_t dim) const;
  void all_reduce_sum(at::Tensor& t) const;        // in place
  void broadcast(at::Tensor& t, int root = 0) const;  // in place; same shape and dtype on every rank
  void barrier() const;

  struct Impl;
  explicit ProcessGroup(std::shared_ptr<Impl> impl);

 private:
  std::shared_ptr<Impl> impl_;
};

// What one rank sends through its collectives: calls and bytes (ring algorithms for all-gather and
// all-reduce, as NCCL and Gloo use). Counted by simulated groups (Parallel::simulate).
struct Traffic {
  int64_t calls = 0, bytes = 0;
};

class Parallel {
 public:
  // Connects to the other ranks (rank 0 hosts the rendezvous store at MASTER_ADDR:MASTER_PORT) and
  // builds the world, inner and cfg groups: NCCL when `device` is CUDA, Gloo otherwise. Throws
  // Error when the layout does not fit the world size or a rank cannot be reached in time.
  static std::shared_ptr<const Parallel> init(const LaunchEnv& env, const ParallelOptions& opt,
                                              const std::string& device);
  // Groups that do not communicate, for dry runs on the meta device: each collective returns a
  // tensor of the right shape (contents undefined; an all-gather assumes every rank's part has this
  // rank's shape) and counts this rank's traffic. The communication of each strategy at the real
  // shapes, without the GPUs (omniflux-plan --world N).
  static std::shared_ptr<const Parallel> simulate(int world_size, const ParallelOptions& opt, int rank = 0);
  ~Parallel();
  bool simulated() const;
  Traffic traffic() const;  // summed over this rank's groups since they were made

  int rank() const;
  int world_size() const;
  const ParallelOptions& options() const;
  const ProcessGroup& world() const;
  const ProcessGroup& inner() const;  // world_size / cfg ranks: sequence and tensor parallelism
  const ProcessGroup& cfg() const;    // 1 or 2 ranks: the CFG pair
  // The group the DiTs split their tokens over, or nullptr (one rank, or sequence parallelism off).
  const ProcessGroup* sequence_group() const;
  const ProcessGroup* tensor_group() const;  // likewise for the language models

  // Both halves of a CFG pair. With a cfg group of 2 ranks, cfg rank 0 runs `cond`, cfg rank 1
  // runs `uncond`, and they exchange results (same shape on both); otherwise both run here.
  std::pair<at::Tensor, at::Tensor> cfg_pair(const std::function<at::Tensor()>& cond,
                                             const std::function<at::Tensor()>& uncond) const;

  struct Impl;

 private:
  explicit Parallel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// cfg_pair for code that may run without a Parallel (p == nullptr: both run here).
std::pair<at::Tensor, at::Tensor> cfg_pair(const Parallel* p, const std::function<at::Tensor()>& cond,
                                           const std::function<at::Tensor()>& uncond);

// A batch of n guidance rows split over the CFG group: `run(begin, end)` computes this rank's
// rows [begin, end) and every rank gets all n, gathered along dim 0. Without a CFG group of 2
// (or with n < 2), run(0, n).
at::Tensor cfg_rows(const Parallel* p, int64_t n, const std::function<at::Tensor(int64_t, int64_t)>& run);

// Balanced contiguous split of n items over `parts`: the first n % parts get one more.
std::vector<int64_t> split_sizes(int64_t n, int64_t parts);

// Whether the distributed backends were compiled in (Gloo needs its headers at build time, NCCL
// a CUDA LibTorch and nccl.h).
bool have_gloo();
bool have_nccl();

}  // namespace omniflux
