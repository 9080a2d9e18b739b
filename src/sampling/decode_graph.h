#pragma once
// A decode step and the sampler after it, replayed as one CUDA graph per KV bucket
// (docs/gpu.md §Decode graphs; gpt-fast and llama.cpp do the same to reach the bandwidth limit).
//
// The cache must be in fixed shapes (KVCache::use_fixed_shapes): then a step's tensors change shape
// only at bucket edges and depend on no host value but the bucket, and TokenSampler::sample is a
// fixed-shape function of device tensors, so the pair can be captured once per bucket and
// replayed with new input ids. The first step of each bucket runs eagerly (it warms kernels and
// plans up for the new shapes), the second is captured, and the rest are replays; a replay counts
// the step on the host (KVCache's host length) without running its host code.
//
// On CUDA the capture is an at::cuda::CUDAGraph on a side stream, with the sampler's generator
// registered so every replay draws new numbers. Elsewhere (the CPU) there is nothing to capture,
// and a "replay" runs the step again with the cache's host counters set back to their values at
// capture: a step that read a host value that changes per token (a length, a position, a write
// slot) would then compute with a stale one, so the CPU tests that compare graph decoding with
// ordinary decoding token for token check that the step is capturable by construction.
#include <cstdint>
#include <functional>
#include <memory>

#include <ATen/core/Tensor.h>

#include "omniflux/kv_cache.h"
#include "omniflux/runtime.h"
#include "sampling/token_sampler.h"

namespace omniflux::sampling {

// What the token loops take as graph_cache: `cache`, switched to fixed shapes, when
// rt.decode_graphs; null otherwise. Call it after the prefill (outside a step).
KVCache* decode_graph_cache(KVCache& cache, const RuntimeOptions& rt);

class DecodeGraph {
 public:
  using Step = std::function<at::Tensor(const at::Tensor& ids)>;  // ids [R] -> logits [R, V]
  DecodeGraph(KVCache& cache, Step step, TokenSampler& sampler);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // step(ids) then sampler.sample(): the next ids [B]. The returned tensor and logits() are the
  // graph's static outputs, overwritten by the next run: copy what must outlive it.
  at::Tensor run(const at::Tensor& ids);
  const at::Tensor& logits() const { return logits_; }

  int64_t captures() const { return captures_; }  // graphs captured (one per bucket used)
  int64_t replays() const { return replays_; }    // steps run as replays

 private:
  struct Cuda;  // the CUDA graph and its stream (decode_graph.cpp)
  void step_and_sample(const at::Tensor& ids);  // sets logits_ and next_
  at::Tensor eager(const at::Tensor& ids);
  void capture(const at::Tensor& ids);
  void replay();

  KVCache& cache_;
  Step step_;
  TokenSampler& sampler_;
  std::unique_ptr<Cuda> cuda_;
  at::Tensor ids_, logits_, next_;   // the static input and outputs
  KVCache::HostState captured_{};    // the cache's host side when the graph was captured
  int64_t warm_view_ = -1, graph_view_ = -1;
  int64_t captures_ = 0, replays_ = 0;
};

}  // namespace omniflux::sampling
