#include "nn/rotary_multimodal.h"

#include <numeric>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/rotary.h"

namespace omniflux::nn {

std::pair<at::Tensor, at::Tensor> mrope_cos_sin(const at::Tensor& positions, const at::Tensor& inv_freq,
                                                const std::vector<int64_t>& sections) {
  if (positions.dim() != 3 || positions.size(0) != 3)
    throw Error("M-RoPE positions must be [3, B, S]", "nn::mrope_cos_sin", "[3, B, S]",
                shape_str(positions.sizes().vec()));
  const int64_t half = inv_freq.numel();
  if (sections.size() != 3 || std::accumulate(sections.begin(), sections.end(), int64_t(0)) != half)
    throw Error("mrope_section must have 3 entries summing to head_dim / 2", "nn::mrope_cos_sin",
                std::to_string(half), shape_str(sections));
  auto [cos, sin] = rope_cos_sin(positions, inv_freq);  // [3, B, S, D]
  // Row of each of the D dims: sections laid out twice, chunk k from row k % 3.
  std::vector<int64_t> row;
  for (int rep = 0; rep < 2; ++rep)
    for (int64_t k = 0; k < 3; ++k) row.insert(row.end(), sections[k], k);
  at::Tensor idx = at::tensor(row, at::kLong).to(positions.device()).view({1, 1, 1, -1}).expand(
      {1, cos.size(1), cos.size(2), cos.size(3)});
  return {cos.gather(0, idx).squeeze(0), sin.gather(0, idx).squeeze(0)};
}

std::pair<at::Tensor, at::Tensor> rope_2d_cos_sin(const at::Tensor& hpos, const at::Tensor& wpos, int64_t head_dim,
                                                  double theta) {
  if (head_dim % 4 != 0) throw Error("2-D rotary needs head_dim % 4 == 0", "nn::rope_2d_cos_sin", "", std::to_string(head_dim));
  at::Tensor f = rope_inv_freq(head_dim / 2, theta).to(hpos.device());
  at::Tensor rot = at::cat({hpos.to(at::kFloat).unsqueeze(-1) * f, wpos.to(at::kFloat).unsqueeze(-1) * f}, -1);
  at::Tensor emb = at::cat({rot, rot}, -1);
  return {emb.cos(), emb.sin()};
}

}  // namespace omniflux::nn
