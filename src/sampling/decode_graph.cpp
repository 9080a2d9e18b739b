#include "sampling/decode_graph.h"

#include <utility>

#include <ATen/ATen.h>

#include "omniflux/error.h"

#if OMNIFLUX_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace omniflux::sampling {

#if OMNIFLUX_WITH_CUDA
struct DecodeGraph::Cuda {
  explicit Cuda(c10::DeviceIndex device) : stream(c10::cuda::getStreamFromPool(false, device)) {}
  c10::cuda::CUDAStream stream;  // warm-up and capture run here, as PyTorch's graph docs ask
  std::unique_ptr<at::cuda::CUDAGraph> graph;

  // `to` waits for the work queued so far on `from`.
  static void wait(const c10::cuda::CUDAStream& to, const c10::cuda::CUDAStream& from) {
    at::cuda::CUDAEvent e;
    e.record(from);
    e.block(to);
  }
};
#else
struct DecodeGraph::Cuda {};
#endif

KVCache* decode_graph_cache(KVCache& cache, const RuntimeOptions& rt) {
  if (!rt.decode_graphs) return nullptr;
  cache.use_fixed_shapes(kDecodeGraphBucket);
  return &cache;
}

DecodeGraph::DecodeGraph(KVCache& cache, Step step, TokenSampler& sampler)
    : cache_(cache), step_(std::move(step)), sampler_(sampler) {
  if (!cache_.fixed_shapes())
    throw Error("a decode graph needs a cache in fixed shapes", "sampling::DecodeGraph",
                "KVCache::use_fixed_shapes(bucket) first", "growing key views");
#if OMNIFLUX_WITH_CUDA
  if (sampler_.generator().device().is_cuda()) cuda_ = std::make_unique<Cuda>(sampler_.generator().device().index());
#endif
}

DecodeGraph::~DecodeGraph() = default;

void DecodeGraph::step_and_sample(const at::Tensor& ids) {
  logits_ = step_(ids);
  next_ = sampler_.sample(logits_);
}

at::Tensor DecodeGraph::eager(const at::Tensor& ids) {
#if OMNIFLUX_WITH_CUDA
  if (cuda_) {
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(cuda_->stream.device_index());
    Cuda::wait(cuda_->stream, current);
    {
      c10::cuda::CUDAStreamGuard guard(cuda_->stream);
      step_and_sample(ids);
    }
    Cuda::wait(current, cuda_->stream);
    return next_;
  }
#endif
  step_and_sample(ids);
  return next_;
}

void DecodeGraph::capture(const at::Tensor& ids) {
  logits_ = next_ = at::Tensor();
  ids_ = ids.clone();  // the static input, allocated outside the graph's pool
  captured_ = cache_.host_state();
#if OMNIFLUX_WITH_CUDA
  if (cuda_) {
    cuda_->graph.reset();  // the previous bucket's graph is never replayed again
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    graph->register_generator_state(sampler_.generator());
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(cuda_->stream.device_index());
    Cuda::wait(cuda_->stream, current);
    {
      c10::cuda::CUDAStreamGuard guard(cuda_->stream);
      // Thread-local mode: another thread's CUDA calls (a server's other requests) do not break it.
      graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      try {
        step_and_sample(ids_);
      } catch (...) {
        // End the capture, or the stream stays in capture mode and every later launch on it fails.
        try {
          graph->capture_end();
        } catch (...) {
        }
        cache_.set_host_state(captured_);
        throw;
      }
      graph->capture_end();
    }
    Cuda::wait(current, cuda_->stream);
    cuda_->graph = std::move(graph);
    cache_.set_host_state(captured_);  // capture ran the step's host side but none of its kernels
  }
#endif
  graph_view_ = cache_.next_view_length(1);
  ++captures_;
}

void DecodeGraph::replay() {
#if OMNIFLUX_WITH_CUDA
  if (cuda_) {
    cuda_->graph->replay();
    cache_.count_replayed_step(1);
    ++replays_;
    return;
  }
#endif
  // No graph here: run the step with the host side as the capture saw it (see the header).
  const KVCache::HostState now = cache_.host_state();
  cache_.set_host_state(captured_);
  try {
    step_and_sample(ids_);
  } catch (...) {
    cache_.set_host_state(now);
    throw;
  }
  cache_.set_host_state(now);
  cache_.count_replayed_step(1);
  ++replays_;
}

at::Tensor DecodeGraph::run(const at::Tensor& ids) {
  // Checked here: a replay does not run the step's own check, and a capture must not throw.
  if (cache_.length() + 1 > cache_.capacity())
    throw Error("KV cache is full", "sampling::DecodeGraph::run", "at most " + std::to_string(cache_.capacity()) + " tokens",
                std::to_string(cache_.length()) + " + 1");
  const int64_t view = cache_.next_view_length(1);
  if (view != graph_view_) {
    if (view != warm_view_) {  // the bucket's first step: eager, so the capture finds warm kernels
      at::Tensor next = eager(ids);
      warm_view_ = view;  // only once a step of this bucket has run
      return next;
    }
    capture(ids);
  }
  if (ids.sizes() != ids_.sizes())
    throw Error("decode graph input changed shape", "sampling::DecodeGraph::run", shape_str(ids_.sizes().vec()),
                shape_str(ids.sizes().vec()));
  ids_.copy_(ids);
  replay();
  return next_;
}

}  // namespace omniflux::sampling
