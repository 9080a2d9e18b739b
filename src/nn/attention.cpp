#include "omniflux/nn/attention.h"

#include <cmath>
#include <limits>
#include <map>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux::nn {

namespace {

// Bool mask [Lq, Lk], true where query i may see key j (end-aligned causal).
at::Tensor causal_mask(int64_t lq, int64_t lk, const at::Device& dev) {
  const auto o = at::TensorOptions().dtype(at::kLong).device(dev);
  return at::arange(lk, o).unsqueeze(0) <= at::arange(lq, o).unsqueeze(1) + (lk - lq);
}

// The user's mask with the causal one on top. Bool masks stay bool (true = attend); an additive
// mask gets -inf where the causal mask forbids, in the query dtype.
at::Tensor with_causal(const at::Tensor& user, const at::Tensor& causal, at::ScalarType dtype) {
  if (!user.defined()) return causal;
  if (user.scalar_type() == at::kBool) return user.logical_and(causal);
  return at::where(causal, user.to(dtype), -std::numeric_limits<double>::infinity());
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
  // Grouped-query attention without repeating k/v: the CPU flash kernel and CUDA's flash,
  // memory-efficient and cuDNN kernels take Hkv < Hq as they are.
  const bool gqa = hq != hkv;
  // A single query sees every key, and a square causal block is SDPA's own is_causal: no mask.
  const bool causal = opt.causal && lq > 1;
  if (!causal || lq == lk) {
    std::optional<at::Tensor> m;
    if (opt.mask.defined()) m = opt.mask.scalar_type() == at::kBool ? opt.mask : opt.mask.to(q.scalar_type());
    // is_causal with a mask is not allowed; lq == lk keeps top-left and end alignment equal.
    if (causal && m) m = with_causal(*m, causal_mask(lq, lk, q.device()), q.scalar_type());
    return at::scaled_dot_product_attention(q, k, v, m, 0.0, causal && !m, scale, gqa);
  }
  at::Tensor m = with_causal(opt.mask, causal_mask(lq, lk, q.device()), q.scalar_type());
  return at::scaled_dot_product_attention(q, k, v, m, 0.0, false, scale, gqa);
}

at::Tensor segment_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& cu_seqlens, std::optional<double> scale) {
  if (q.dim() != 3 || k.sizes() != q.sizes() || v.sizes() != q.sizes())
    throw Error("segment_attention expects q, k, v of one shape [H, L, D]", "nn::segment_attention", "[H, L, D]",
                shape_str(q.sizes().vec()) + ", " + shape_str(k.sizes().vec()) + ", " + shape_str(v.sizes().vec()));
  at::Tensor cu = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* c = cu.data_ptr<int64_t>();
  const int64_t n = cu.numel() - 1, H = q.size(0), L = q.size(1), D = q.size(2);
  if (n < 1 || c[0] != 0 || c[n] != L)
    throw Error("cu_seqlens do not cover the sequence", "nn::segment_attention", "0 ... " + std::to_string(L),
                n < 1 ? "no segment" : std::to_string(c[0]) + " ... " + std::to_string(c[n]));
  // Segments grouped by length: each group is one batched SDPA call [m, H, len, D].
  std::map<int64_t, std::vector<int64_t>> groups;  // length -> segment starts
  for (int64_t i = 0; i < n; ++i) {
    if (c[i + 1] < c[i]) throw Error("cu_seqlens decrease", "nn::segment_attention");
    if (c[i + 1] > c[i]) groups[c[i + 1] - c[i]].push_back(c[i]);
  }
  AttentionOptions opt;
  opt.scale = scale;
  // [H, m * len, D] -> [m, H, len, D] (a view when the rows are in place)
  auto batch = [&](const at::Tensor& t, int64_t m, int64_t len) { return t.view({H, m, len, D}).transpose(0, 1); };
  if (groups.size() == 1) {
    const int64_t len = groups.begin()->first, m = L / len;  // equal segments tile [0, L) in order
    return attention(batch(q, m, len), batch(k, m, len), batch(v, m, len), opt).transpose(0, 1).reshape({H, L, D});
  }
  at::Tensor out = at::empty_like(q);
  for (const auto& [len, starts] : groups) {
    const int64_t m = static_cast<int64_t>(starts.size());
    at::Tensor idx = at::empty({m * len}, at::kLong);
    int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t s : starts)
      for (int64_t j = 0; j < len; ++j) *p++ = s + j;
    idx = idx.to(q.device());
    auto gather = [&](const at::Tensor& t) { return batch(t.index_select(1, idx), m, len); };
    at::Tensor o = attention(gather(q), gather(k), gather(v), opt);   // [m, H, len, D]
    out.index_copy_(1, idx, o.transpose(0, 1).reshape({H, m * len, D}));
  }
  return out;
}

}  // namespace omniflux::nn
