#pragma once
// The repeated blocks of a big model (the FLUX DiT's double and single blocks, the Qwen2 layers of
// the LMs) and where their weights live (RuntimeOptions::offload, docs/architecture.md §Offload):
//   none, model   every block built once at load, on the compute device;
//   sequential    CPU:  each block is built from the mapped checkpoint just before it runs (dtype
//                       conversion and q/k/v fusion included) and dropped after, with its file pages
//                       given back, so the resident set holds about one block;
//                 CUDA: every block is built once at load and packed into its own pinned host
//                       arena (one allocation, each tensor a view of it, fused weights included);
//                       while block i computes, block i+1's arena is copied in one transfer on a
//                       side stream into the other of two device slots (kStreamedBlocksOnDevice).
// The math is the same in every mode: a block is built by the same code from the same bytes.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/error.h"
#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux::nn {

// Blocks of one stack on the device at once under sequential offload on CUDA: the one computing and
// the next one arriving, each in its own fixed slot. The plan (src/plan/offload.cpp) counts these.
constexpr int64_t kStreamedBlocksOnDevice = 2;

namespace detail {
// One host allocation holding every tensor in `tensors`: each is copied in (contiguous, at a
// 256-byte-aligned offset) and replaced by a view of the arena, which is returned as [bytes] uint8.
// `pinned` allocates page-locked memory with cudaHostAlloc (a CUDA build only), outside LibTorch's
// caching host allocator, which would round each block up to a power of two and keep it; otherwise
// ordinary pageable memory (how the CPU tests build it).
at::Tensor pack_host_arena(const std::vector<at::Tensor*>& tensors, bool pinned);
// The tensor that `buffer` (a copy of `arena`'s bytes, on any device) holds where `t`, a view made
// by pack_host_arena, lies in `arena`: same byte offset, dtype and shape.
at::Tensor view_at_same_offset(const at::Tensor& t, const at::Tensor& arena, const at::Tensor& buffer);
// An uninitialised [bytes] uint8 tensor on `device`.
at::Tensor device_bytes(int64_t bytes, c10::Device device);

// A stand-in for the CUDA side stream, so tests on machines without CUDA drive the streaming path.
// While one is installed (set_fake_copy_stream), a stack loaded with sequential offload on the CPU
// takes the CUDA path (host arenas, two device slots, prefetch of the next block) and hands each
// copy to it; a fake that holds the copy until wait(slot) shows that no block is read before its
// copy was waited for.
class CopyStream {
 public:
  virtual ~CopyStream() = default;
  // Queues `work` (the copy into `slot`); it must have run when wait(slot) returns.
  virtual void copy(int slot, std::function<void()> work) = 0;
  virtual void wait(int slot) = 0;
};
// nullptr removes it. Stacks keep the one they were loaded with.
void set_fake_copy_stream(std::shared_ptr<CopyStream> stream);
std::shared_ptr<CopyStream> fake_copy_stream();

// Side-stream copies for the streaming path: CUDA events and a pool stream on CUDA, the fake copy
// stream when one is given, otherwise the copy runs at once.
class BlockPrefetcher {
 public:
  explicit BlockPrefetcher(c10::Device device, std::shared_ptr<CopyStream> fake = nullptr);
  ~BlockPrefetcher();
  // Runs `copy` with the side stream current, after the work queued so far on the compute stream,
  // and records when it is done, in slot 0 or 1.
  void copy(int slot, const std::function<void()>& copy);
  // The compute stream waits for slot's copy.
  void wait(int slot);
  struct State;

 private:
  std::unique_ptr<State> state_;
  std::shared_ptr<CopyStream> fake_;
};
}  // namespace detail

template <class Block>
class BlockStack {
 public:
  using Build = std::function<Block(const WeightView&)>;

  BlockStack() = default;
  // Blocks base.sub(0) .. base.sub(count - 1). `base` must view a store held by a shared_ptr
  // (WeightStore::open); sequential offload keeps it alive.
  static BlockStack load(const WeightView& base, int64_t count, Build build, const RuntimeOptions& rt) {
    BlockStack s;
    s.base_prefix_ = base.prefix();
    s.count_ = count;
    s.build_ = std::move(build);
    s.device_ = rt.torch_device();
    if (!s.device_.is_cuda()) s.fake_stream_ = detail::fake_copy_stream();
    const bool slots = s.device_.is_cuda() || s.fake_stream_;
    s.mode_ = rt.offload == Offload::Sequential ? (slots ? Mode::StreamSlots : Mode::StreamCpu) : Mode::Resident;
    if (s.mode_ == Mode::StreamCpu) {
      try {
        s.store_ = base.store().shared_from_this();
      } catch (const std::bad_weak_ptr&) {
        throw Error("sequential offload needs a shared weight store", base.prefix(), "a store from WeightStore::open",
                    "a store on the stack");
      }
    }
    for (int64_t i = 0; i < count; ++i) {
      const WeightView w = base.sub(i);
      if (s.mode_ == Mode::Resident) {
        s.blocks_.push_back(s.build_(w));
      } else if (s.mode_ == Mode::StreamSlots) {
        Block b = [&] {
          WeightStore::Target host(base.store(), c10::Device(c10::kCPU), /*pinned=*/false);
          return s.build_(w);
        }();
        std::vector<at::Tensor*> ts;
        b.for_each_tensor([&](at::Tensor& t) {
          if (t.defined()) ts.push_back(&t);
        });
        s.arenas_.push_back(detail::pack_host_arena(ts, /*pinned=*/s.device_.is_cuda()));
        s.slot_bytes_ = std::max(s.slot_bytes_, s.arenas_.back().numel());
        s.blocks_.push_back(std::move(b));
        base.store().drop_pages(w.prefix() + ".");
      } else {
        // Built once now so every key and shape is checked (and marked used) at load.
        (void)s.build_(w);
        base.store().drop_pages(w.prefix() + ".");
      }
    }
    return s;
  }

  // Blocks already built (random weights for benchmarks); always resident.
  static BlockStack from_blocks(std::vector<Block> blocks) {
    BlockStack s;
    s.count_ = static_cast<int64_t>(blocks.size());
    s.blocks_ = std::move(blocks);
    return s;
  }

  int64_t size() const { return count_; }

  // f(const Block&, int64_t index) for every block in order.
  template <class F>
  void run(F&& f) const {
    switch (mode_) {
      case Mode::Resident:
        for (int64_t i = 0; i < count_; ++i) f(blocks_[i], i);
        return;
      case Mode::StreamCpu:
        for (int64_t i = 0; i < count_; ++i) {
          const WeightView w = store_->root().sub(base_prefix_).sub(i);
          {
            const Block b = build_(w);
            f(b, i);
          }
          store_->drop_pages(w.prefix() + ".");
        }
        return;
      case Mode::StreamSlots: {
        static_assert(kStreamedBlocksOnDevice == 2, "the slots below alternate between two");
        detail::BlockPrefetcher pf(device_, fake_stream_);
        // Two fixed slots, each the size of the largest arena; made on the compute stream, which
        // waits for every copy into them before it reads, so they need no other stream marks.
        const at::Tensor slots[2] = {detail::device_bytes(slot_bytes_, device_),
                                     detail::device_bytes(slot_bytes_, device_)};
        std::optional<Block> next, cur;
        auto to_device = [&](int64_t i, int slot) {
          // The side stream first waits for the compute stream to finish block i - 2, which used
          // this slot (BlockPrefetcher::copy), then copies the whole arena in one transfer. i and
          // slot by value: a (fake) stream may run the copy after this returns.
          pf.copy(slot, [&, i, slot] {
            const at::Tensor& arena = arenas_[i];
            slots[slot].slice(0, 0, arena.numel()).copy_(arena, /*non_blocking=*/true);
            next = blocks_[i];
            next->for_each_tensor([&](at::Tensor& t) {
              if (t.defined()) t = detail::view_at_same_offset(t, arena, slots[slot]);
            });
          });
        };
        to_device(0, 0);
        for (int64_t i = 0; i < count_; ++i) {
          pf.wait(static_cast<int>(i % 2));
          cur = std::move(next);
          next.reset();
          if (i + 1 < count_) to_device(i + 1, static_cast<int>((i + 1) % 2));
          f(*cur, i);
        }
        return;
      }
    }
  }

 private:
  enum class Mode { Resident, StreamCpu, StreamSlots };
  Mode mode_ = Mode::Resident;
  int64_t count_ = 0;
  std::string base_prefix_;
  Build build_;
  c10::Device device_ = c10::Device(c10::kCPU);
  std::vector<Block> blocks_;            // Resident: on the device; StreamSlots: views of arenas_
  std::vector<at::Tensor> arenas_;       // StreamSlots: one [bytes] uint8 arena per block (pinned on CUDA)
  int64_t slot_bytes_ = 0;               // StreamSlots: the largest arena
  std::shared_ptr<WeightStore> store_;   // StreamCpu
  std::shared_ptr<detail::CopyStream> fake_stream_;  // StreamSlots on the CPU (tests)
};

}  // namespace omniflux::nn
