#pragma once
// The one attention function (docs/architecture.md §Attention): at::scaled_dot_product_attention, which picks the flash,
// memory-efficient or cuDNN kernels on CUDA and the fused flash kernel on the CPU (LibTorch 2.11
// picks it for every shape the models use, fp32 and bf16, masks and grouped heads included).
// Causal, padded (mask), block-diagonal (`segment_attention`) and joint uses all go through it.
// No mask is built when SDPA's is_causal covers it (a square causal block) or nothing is masked
// (one query against a cache), and grouped k/v heads go in as they are (enable_gqa), never repeated.
//
// On CUDA the backend is chosen here, not left to SDPA's priority list (which in LibTorch 2.11 puts
// cuDNN first on sm_90, whose plan cache is keyed on exact sizes: a decode whose key length grows by
// one each token would build a plan per token). Half-precision attention without a mask, head_dim
// <= 256 and a multiple of 8, calls the flash kernel directly: it takes grouped k/v heads and, for
// Lq != Lk, aligns the causal mask to the bottom right, which is this function's end alignment, so
// prefills with a cache and decode need no mask. Left-padded rows (a CFG pair of prompts of
// different lengths) come as per-row key starts instead of a key mask, and each row runs on its own
// keys, unpadded. Everything else (fp32, masks, head_dim 512) goes through SDPA's own choice; one
// query per row against a mask with grouped heads (the fixed-shape decode of decode graphs) goes
// there with the query heads of each key head folded into its queries, so no kernel needs GQA.
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace omniflux {
class ProcessGroup;  // omniflux/distributed.h
}

namespace omniflux::nn {

struct AttentionOptions {
  bool causal = false;  // query i sees keys <= i + (Lk - Lq): aligned to the end, as with a KV cache
  std::optional<double> scale;  // default 1/sqrt(head_dim)
  // Additive float mask or bool mask (true = attend), broadcastable to [B, Hq, Lq, Lk].
  at::Tensor mask;
  // Left padding without a mask: per batch row, the index of its first real key (empty: all keys
  // are real). Row b attends keys [key_start[b], Lk) only; its queries that stand for pad positions
  // (index i < key_start[b] - (Lk - Lq), in a prefill) get zeros. Host values, so no device read.
  std::vector<int64_t> key_start;
};

// q: [B, Hq, Lq, D]; k, v: [B, Hkv, Lk, D] with Hq % Hkv == 0 (grouped-query attention).
// Returns [B, Hq, Lq, D].
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& opt = {});

// Which kernel attention() runs for these inputs: "flash" (called directly, CUDA), "sdpa-<name>"
// (LibTorch's own choice: math, flash, efficient, cudnn), prefixed "rows:" when left-padded rows
// run one at a time. For `omniflux-bench attention` and the GPU check.
std::string attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const AttentionOptions& opt = {});

// Unmasked attention over a sequence split across the ranks of `group` (DeepSpeed-Ulysses, xDiT's
// USP without the ring part): q, k, v [B, H, Lr, D] hold this rank's Lr tokens for all H heads,
// `lens` every rank's token count (uneven splits are fine; H must divide by the group's size).
// One all-to-all gives each rank all tokens for H/P heads, attention runs on whole sequences, and a
// second returns this rank's tokens: [B, H, Lr, D]. Unmasked attention does not care in which order
// the keys arrive, and each query's output returns to its own rank, so it equals attention over
// the whole sequence up to the order of the sums.
at::Tensor ulysses_attention(const ProcessGroup& group, const std::vector<int64_t>& lens, const at::Tensor& q,
                             const at::Tensor& k, const at::Tensor& v);

// Block-diagonal attention over variable-length segments of one packed sequence (the Qwen2.5-VL
// vision windows, SigLIP images): q, k, v [H, L, D]; cu_seqlens [S + 1] int64 cumulative lengths
// (CPU). Tokens attend within their own segment only. Segments of one length run as one batched
// SDPA call (a view, without copies, when all segments have the same length).
at::Tensor segment_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& cu_seqlens, std::optional<double> scale = std::nullopt);

}  // namespace omniflux::nn
