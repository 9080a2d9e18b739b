#include "omniflux/nn/attention.h"

#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux::nn {

namespace {

// [B, Hkv, L, D] -> [B, Hkv * n_rep, L, D], each kv head repeated for its group of query heads.
at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  const auto s = x.sizes();
  return x.unsqueeze(2).expand({s[0], s[1], n_rep, s[2], s[3]}).reshape({s[0], s[1] * n_rep, s[2], s[3]});
}

// Bool mask [Lq, Lk], true where query i may see key j (end-aligned causal).
at::Tensor causal_mask(int64_t lq, int64_t lk, const at::Device& dev) {
  at::Tensor qi = at::arange(lq, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(1) + (lk - lq);
  at::Tensor kj = at::arange(lk, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0);
  return kj <= qi;
}

at::Tensor combine_masks(const at::Tensor& user, const at::Tensor& causal, at::ScalarType dtype) {
  // Everything becomes additive in `dtype`: 0 where allowed, -inf (lowest) where not.
  auto to_additive = [&](const at::Tensor& m) {
    if (m.scalar_type() == at::kBool)
      return at::zeros_like(m, at::TensorOptions().dtype(dtype))
          .masked_fill(m.logical_not(), -std::numeric_limits<float>::infinity());
    return m.to(dtype);
  };
  if (!user.defined()) return to_additive(causal);
  if (!causal.defined()) return to_additive(user);
  return to_additive(user) + to_additive(causal);
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& opt) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw Error("attention expects 4-D q, k, v", "nn::attention", "[B, H, L, D]",
                shape_str(q.sizes().vec()) + ", " + shape_str(k.sizes().vec()));
  const int64_t hq = q.size(1), hkv = k.size(1);
  if (hkv == 0 || hq % hkv != 0 || v.size(1) != hkv || k.size(2) != v.size(2) || q.size(3) != k.size(3))
    throw Error("attention shapes do not fit", "nn::attention",
                "q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D], Hq % Hkv == 0",
                shape_str(q.sizes().vec()) + ", " + shape_str(k.sizes().vec()) + ", " +
                    shape_str(v.sizes().vec()));
  const double scale = opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  const int64_t lq = q.size(2), lk = k.size(2);
  at::Tensor kk = repeat_kv(k, hq / hkv), vv = repeat_kv(v, hq / hkv);
  at::Tensor causal;
  if (opt.causal && lq > 1) causal = causal_mask(lq, lk, q.device());
  if (!opt.mask.defined() && opt.causal && lq == lk)
    return at::scaled_dot_product_attention(q, kk, vv, std::nullopt, 0.0, true, scale);
  std::optional<at::Tensor> m;
  if (opt.mask.defined() || causal.defined()) {
    m = (opt.mask.defined() && opt.mask.scalar_type() == at::kBool && !causal.defined())
            ? opt.mask
            : combine_masks(opt.mask, causal, q.scalar_type());
  }
  return at::scaled_dot_product_attention(q, kk, vv, m, 0.0, false, scale);
}

at::Tensor segment_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& cu_seqlens, std::optional<double> scale) {
  if (q.dim() != 3) throw Error("segment_attention expects [H, L, D]", "nn::segment_attention");
  at::Tensor cu = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* c = cu.data_ptr<int64_t>();
  const int64_t n = cu.numel() - 1;
  if (n < 1 || c[0] != 0 || c[n] != q.size(1))
    throw Error("cu_seqlens do not cover the sequence", "nn::segment_attention",
                "0 ... " + std::to_string(q.size(1)), std::to_string(c[n]));
  AttentionOptions opt;
  opt.scale = scale;
  // Per segment: exact and memory-light. (The CUDA path can later use varlen flash kernels.)
  std::vector<at::Tensor> outs;
  outs.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (c[i + 1] < c[i]) throw Error("cu_seqlens decrease", "nn::segment_attention");
    if (c[i + 1] == c[i]) continue;
    outs.push_back(attention(q.slice(1, c[i], c[i + 1]).unsqueeze(0), k.slice(1, c[i], c[i + 1]).unsqueeze(0),
                             v.slice(1, c[i], c[i + 1]).unsqueeze(0), opt)
                       .squeeze(0));
  }
  return at::cat(outs, 1);
}

}  // namespace omniflux::nn
