#pragma once
// Rotary position embeddings. Angles are computed in fp32 (FLUX's in float64), as the references do.
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace omniflux::nn {

// inv_freq[i] = 1 / theta^(2i / dim), i < dim/2, float32 (HF default rope init).
at::Tensor rope_inv_freq(int64_t dim, double theta);

// cos/sin for the rotate-half convention: positions [..., L] (any integer or float dtype) ->
// cos, sin [..., L, dim] float32, the angle table duplicated as cat(freqs, freqs) (HF).
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& positions, const at::Tensor& inv_freq);

// Rotate-half RoPE (Qwen2, Qwen2.5-VL): x * cos + rotate_half(x) * sin, computed in fp32 and cast
// back. x [B, H, L, D]; cos/sin broadcastable to it ([B, 1, L, D] or [L, D]).
at::Tensor apply_rope_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Interleaved-pair RoPE (FLUX, diffusers apply_rotary_emb use_real_unbind_dim=-1): pairs
// (x[2i], x[2i+1]) rotate by angle i. x [B, H, L, D]; cos/sin [L, D] with each angle repeated twice.
at::Tensor apply_rope_interleaved(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Multi-axis interleaved tables (diffusers FluxPosEmbed): ids [L, A] (one coordinate per axis) ->
// cos, sin [L, sum(axes_dims)] float32. Axis a covers axes_dims[a] channels with frequencies
// 1 / theta^(2j / axes_dims[a]); angles, cos and sin are computed in float64 and then cast, each
// value repeated for its pair (c0, c0, c1, c1, ...).
std::pair<at::Tensor, at::Tensor> rope_axes_cos_sin(const at::Tensor& ids, const std::vector<int64_t>& axes_dims,
                                                    double theta);

}  // namespace omniflux::nn
