#include "nn/block_stack.h"

#include <algorithm>
#include <mutex>
#include <string>

#include <ATen/ATen.h>

#include "omniflux/error.h"

#if OMNIFLUX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <cuda_runtime_api.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace omniflux::nn::detail {

#if OMNIFLUX_WITH_CUDA
struct BlockPrefetcher::State {
  c10::cuda::CUDAStream side, compute;
  at::cuda::CUDAEvent done[2];
  at::cuda::CUDAEvent compute_mark;
  State(c10::Device d)
      : side(c10::cuda::getStreamFromPool(false, d.index())), compute(c10::cuda::getCurrentCUDAStream(d.index())) {}
};
#else
struct BlockPrefetcher::State {};
#endif

namespace {
std::mutex fake_mutex;
std::shared_ptr<CopyStream> fake_stream;
}  // namespace

void set_fake_copy_stream(std::shared_ptr<CopyStream> stream) {
  std::lock_guard<std::mutex> lock(fake_mutex);
  fake_stream = std::move(stream);
}

std::shared_ptr<CopyStream> fake_copy_stream() {
  std::lock_guard<std::mutex> lock(fake_mutex);
  return fake_stream;
}

BlockPrefetcher::BlockPrefetcher(c10::Device device, std::shared_ptr<CopyStream> fake) : fake_(std::move(fake)) {
#if OMNIFLUX_WITH_CUDA
  if (device.is_cuda()) state_ = std::make_unique<State>(device);
#endif
}

BlockPrefetcher::~BlockPrefetcher() = default;

void BlockPrefetcher::copy(int slot, const std::function<void()>& copy) {
#if OMNIFLUX_WITH_CUDA
  if (state_) {
    // The side stream may only overwrite memory the compute stream has finished with.
    state_->compute_mark.record(state_->compute);
    state_->compute_mark.block(state_->side);
    c10::cuda::CUDAStreamGuard guard(state_->side);
    copy();
    state_->done[slot].record(state_->side);
    return;
  }
#endif
  if (fake_) return fake_->copy(slot, copy);
  copy();
}

void BlockPrefetcher::wait(int slot) {
#if OMNIFLUX_WITH_CUDA
  if (state_) state_->done[slot].block(state_->compute);
#endif
  if (fake_) fake_->wait(slot);
}

namespace {
constexpr int64_t kArenaAlign = 256;  // every tensor starts at a multiple: any dtype, and DMA-friendly
int64_t aligned(int64_t n) { return (n + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }
}  // namespace

at::Tensor pack_host_arena(const std::vector<at::Tensor*>& tensors, bool pinned) {
  int64_t total = 0;
  for (const at::Tensor* t : tensors) total += aligned(static_cast<int64_t>(t->nbytes()));
  const auto bytes = at::TensorOptions().dtype(at::kByte);
  at::Tensor arena;
  if (pinned) {
#if OMNIFLUX_WITH_CUDA
    void* p = nullptr;
    const cudaError_t err = cudaHostAlloc(&p, static_cast<size_t>(std::max<int64_t>(total, 1)), cudaHostAllocDefault);
    if (err != cudaSuccess)
      throw Error("cannot allocate pinned host memory for a streamed block", "nn::pack_host_arena",
                  std::to_string(total) + " bytes", cudaGetErrorString(err));
    arena = at::from_blob(p, {total}, [](void* q) { cudaFreeHost(q); }, bytes);
#else
    throw Error("pinned host memory needs a CUDA build", "nn::pack_host_arena");
#endif
  } else {
    arena = at::empty({total}, bytes);
  }
  int64_t off = 0;
  for (at::Tensor* t : tensors) {
    const int64_t n = static_cast<int64_t>(t->nbytes());
    at::Tensor v = arena.slice(0, off, off + n).view(t->scalar_type()).view(t->sizes());
    v.copy_(*t);
    *t = v;
    off += aligned(n);
  }
  return arena;
}

at::Tensor view_at_same_offset(const at::Tensor& t, const at::Tensor& arena, const at::Tensor& buffer) {
  // An empty tensor has no address (data_ptr() is null): any empty tensor of its kind will do.
  if (t.numel() == 0) return at::empty(t.sizes(), buffer.options().dtype(t.scalar_type()));
  const auto* base = static_cast<const uint8_t*>(arena.data_ptr());
  const int64_t off = static_cast<const uint8_t*>(t.data_ptr()) - base, n = static_cast<int64_t>(t.nbytes());
  if (!t.is_contiguous() || off < 0 || off + n > arena.numel() || buffer.numel() < off + n)
    throw Error("tensor is not a view of the arena", "nn::view_at_same_offset",
                "a contiguous view inside " + std::to_string(arena.numel()) + " bytes",
                "offset " + std::to_string(off) + ", " + std::to_string(n) + " bytes");
  return buffer.slice(0, off, off + n).view(t.scalar_type()).view(t.sizes());
}

at::Tensor device_bytes(int64_t bytes, c10::Device device) {
  return at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(device));
}

}  // namespace omniflux::nn::detail
