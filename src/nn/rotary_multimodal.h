#pragma once
// Rotary variants of the multimodal models, on top of nn/rotary.h (rotate-half convention).
#include <vector>

#include <ATen/core/Tensor.h>

namespace omniflux::nn {

// Multimodal RoPE (Qwen2-VL / Qwen2.5-VL apply_multimodal_rotary_pos_emb): positions [3, B, S]
// (temporal, height, width rows) -> cos, sin [B, S, head_dim] float32. The head_dim is split into
// chunks `sections` repeated twice ([16, 24, 24] -> 16, 24, 24, 16, 24, 24), chunk k taking its
// angles from position row k % 3. inv_freq has head_dim / 2 entries and sum(sections) must equal it.
std::pair<at::Tensor, at::Tensor> mrope_cos_sin(const at::Tensor& positions, const at::Tensor& inv_freq,
                                                const std::vector<int64_t>& sections);

// 2-D rotary of vision patches (Qwen2.5-VL VisionRotaryEmbedding): row and column positions [N]
// -> cos, sin [N, head_dim] float32, angles cat(h * f, w * f) duplicated for rotate-half, with
// f = rope_inv_freq(head_dim / 2, theta) (head_dim / 4 frequencies per axis).
std::pair<at::Tensor, at::Tensor> rope_2d_cos_sin(const at::Tensor& hpos, const at::Tensor& wpos, int64_t head_dim,
                                                  double theta = 10000.0);

}  // namespace omniflux::nn
