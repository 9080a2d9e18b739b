#include "omniflux/nn/block_stack.h"

#include <ATen/ATen.h>

#if OMNIFLUX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
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

BlockPrefetcher::BlockPrefetcher(c10::Device device) {
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
  copy();
}

void BlockPrefetcher::wait(int slot) {
#if OMNIFLUX_WITH_CUDA
  if (state_) state_->done[slot].block(state_->compute);
#endif
}

void BlockPrefetcher::use_on_compute_stream(const at::Tensor& t) {
#if OMNIFLUX_WITH_CUDA
  if (state_ && t.is_cuda()) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), state_->compute);
#endif
}

}  // namespace omniflux::nn::detail
