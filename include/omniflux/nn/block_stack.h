#pragma once
// The repeated blocks of a big model (the FLUX DiT's double and single blocks, the Qwen2 layers of
// the LMs) and where their weights live (RuntimeOptions::offload, docs/architecture.md §Offload):
//   none, model   every block built once at load, on the compute device;
//   sequential    CPU:  each block is built from the mapped checkpoint just before it runs (dtype
//                       conversion and q/k/v fusion included) and dropped after, with its file pages
//                       given back, so the resident set holds about one block;
//                 CUDA: every block is built once at load into pinned host memory; while block i
//                       computes, block i+1 is copied to the device on a side stream (two blocks on
//                       the device at a time).
// The math is the same in every mode: a block is built by the same code from the same bytes.
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

namespace detail {
// Side-stream copies for the CUDA path; every member is a no-op without CUDA.
class BlockPrefetcher {
 public:
  explicit BlockPrefetcher(c10::Device device);
  ~BlockPrefetcher();
  // Runs `copy` with the side stream current and records when it is done, in slot 0 or 1.
  void copy(int slot, const std::function<void()>& copy);
  // The compute stream waits for slot's copy; `t` is marked as used on the compute stream so the
  // allocator does not reuse its memory before the compute that reads it is done.
  void wait(int slot);
  void use_on_compute_stream(const at::Tensor& t);
  struct State;

 private:
  std::unique_ptr<State> state_;
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
    s.mode_ = rt.offload == Offload::Sequential ? (s.device_.is_cuda() ? Mode::StreamCuda : Mode::StreamCpu) : Mode::Resident;
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
      } else if (s.mode_ == Mode::StreamCuda) {
        WeightStore::Target pinned(base.store(), c10::Device(c10::kCPU), /*pinned=*/true);
        s.blocks_.push_back(s.build_(w));
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
      case Mode::StreamCuda: {
        detail::BlockPrefetcher pf(device_);
        std::optional<Block> next, cur;
        auto to_device = [&](int64_t i, int slot) {
          pf.copy(slot, [&] {
            next = blocks_[i];
            next->for_each_tensor([&](at::Tensor& t) {
              if (t.defined()) t = t.to(device_, /*non_blocking=*/true);
            });
          });
        };
        to_device(0, 0);
        for (int64_t i = 0; i < count_; ++i) {
          pf.wait(static_cast<int>(i % 2));
          cur = std::move(next);
          next.reset();
          cur->for_each_tensor([&](at::Tensor& t) {
            if (t.defined()) pf.use_on_compute_stream(t);
          });
          if (i + 1 < count_) to_device(i + 1, static_cast<int>((i + 1) % 2));
          f(*cur, i);
        }
        return;
      }
    }
  }

 private:
  enum class Mode { Resident, StreamCpu, StreamCuda };
  Mode mode_ = Mode::Resident;
  int64_t count_ = 0;
  std::string base_prefix_;
  Build build_;
  c10::Device device_ = c10::Device(c10::kCPU);
  std::vector<Block> blocks_;            // Resident: on the device; StreamCuda: pinned host copies
  std::shared_ptr<WeightStore> store_;   // StreamCpu
};

}  // namespace omniflux::nn
