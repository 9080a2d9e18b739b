#include "nn/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include <ATen/ATen.h>

#include "omniflux/distributed.h"
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

namespace {

void check_shapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionOptions& opt) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw Error("attention expects 4-D q, k, v", "nn::attention", "[B, H, L, D]",
                shape_str(q.sizes().vec()) + ", " + shape_str(k.sizes().vec()));
  const int64_t hq = q.size(1), hkv = k.size(1);
  if (hkv == 0 || hq % hkv != 0 || v.size(1) != hkv || k.size(2) != v.size(2) || q.size(3) != k.size(3))
    throw Error("attention shapes do not fit", "nn::attention",
                "q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D], Hq % Hkv == 0",
                shape_str(q.sizes().vec()) + ", " + shape_str(k.sizes().vec()) + ", " +
                    shape_str(v.sizes().vec()));
  if (!opt.key_start.empty()) {
    if (static_cast<int64_t>(opt.key_start.size()) != q.size(0) || k.size(0) != q.size(0))
      throw Error("key_start needs one value per batch row", "nn::attention", std::to_string(q.size(0)),
                  std::to_string(opt.key_start.size()));
    if (opt.mask.defined())
      throw Error("key_start and a mask together", "nn::attention", "one way of masking keys", "both");
    for (int64_t s : opt.key_start)
      if (s < 0 || s >= k.size(2))
        throw Error("key_start outside the keys", "nn::attention", "0.." + std::to_string(k.size(2) - 1),
                    std::to_string(s));
  }
}

bool padded(const AttentionOptions& opt) {
  for (int64_t s : opt.key_start)
    if (s != 0) return true;
  return false;
}

// The flash kernel, called directly: CUDA, half precision, no mask, head_dim a multiple of 8 up to
// 256, unit stride in the last dimension (LibTorch's own flash checks for these inputs).
bool direct_flash(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionOptions& opt) {
  if (!q.is_cuda() || opt.mask.defined()) return false;
  const auto t = q.scalar_type();
  if ((t != at::kBFloat16 && t != at::kHalf) || k.scalar_type() != t || v.scalar_type() != t) return false;
  const int64_t d = q.size(3);
  return d % 8 == 0 && d <= 256 && q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && q.size(2) > 0 &&
         k.size(2) > 0;
}

// Whether SDPA gets the causal flag or a built mask, and which mask.
struct SdpaCall {
  std::optional<at::Tensor> mask;
  bool is_causal = false;
};
SdpaCall sdpa_call(const at::Tensor& q, const at::Tensor& k, const AttentionOptions& opt) {
  const int64_t lq = q.size(2), lk = k.size(2);
  // A single query sees every key, and a square causal block is SDPA's own is_causal: no mask.
  const bool causal = opt.causal && lq > 1;
  SdpaCall c;
  if (opt.mask.defined()) c.mask = opt.mask.scalar_type() == at::kBool ? opt.mask : opt.mask.to(q.scalar_type());
  if (!causal) return c;
  if (lq == lk && !c.mask) {
    c.is_causal = true;  // lq == lk keeps top-left and end alignment equal
    return c;
  }
  // is_causal with a mask is not allowed, and SDPA's is_causal is top-left for lq != lk.
  c.mask = with_causal(c.mask ? *c.mask : at::Tensor(), causal_mask(lq, lk, q.device()), q.scalar_type());
  return c;
}

// One query per row against a key mask with grouped heads: the fixed-shape decode of decode graphs
// (KVCache::use_fixed_shapes). The Hq / Hkv query heads that share a key head become that head's
// Hq / Hkv queries, [B, Hkv, G, D] against k, v [B, Hkv, Lk, D]: the same dot products, and no
// kernel needs grouped heads (LibTorch 2.11's memory-efficient kernel has none, and the math path
// would repeat k and v G times).
bool fold_query_groups(const at::Tensor& q, const at::Tensor& k, const SdpaCall& c) {
  return q.size(1) != k.size(1) && q.size(2) == 1 && c.mask.has_value();
}
std::pair<at::Tensor, at::Tensor> folded(const at::Tensor& q, const at::Tensor& k, const at::Tensor& mask) {
  const int64_t B = q.size(0), hq = q.size(1), hkv = k.size(1), lk = k.size(2);
  at::Tensor m = mask.dim() == 4 && mask.size(1) == 1 ? mask : mask.expand({B, hq, 1, lk}).reshape({B, hkv, hq / hkv, lk});
  return {q.reshape({B, hkv, hq / hkv, q.size(3)}), m};
}

at::Tensor attention_unpadded(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const AttentionOptions& opt, double scale) {
  const bool gqa = q.size(1) != k.size(1);
  if (direct_flash(q, k, v, opt)) {
    // Bottom-right causal alignment for lq != lk (the kernel ignores it for one query).
    return std::get<0>(at::_scaled_dot_product_flash_attention(q, k, v, 0.0, opt.causal && q.size(2) > 1,
                                                               /*return_debug_mask=*/false, scale));
  }
  // Grouped-query attention without repeating k/v: the CPU flash kernel and CUDA's flash,
  // memory-efficient and cuDNN kernels take Hkv < Hq as they are.
  const SdpaCall c = sdpa_call(q, k, opt);
  if (fold_query_groups(q, k, c)) {
    auto [qg, m] = folded(q, k, *c.mask);
    return at::scaled_dot_product_attention(qg, k, v, m, 0.0, false, scale, false).reshape(q.sizes());
  }
  return at::scaled_dot_product_attention(q, k, v, c.mask, 0.0, c.is_causal, scale, gqa);
}

// Row b's queries from this index on stand for real tokens (end-aligned to the keys).
int64_t first_real_query(int64_t key_start, int64_t lq, int64_t lk) {
  return std::min(lq, std::max<int64_t>(0, key_start - (lk - lq)));
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& opt) {
  check_shapes(q, k, v, opt);
  const double scale = opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  if (!padded(opt)) return attention_unpadded(q, k, v, opt, scale);
  // Left-padded rows, each on its own real keys and queries (views, no copies of k/v). Pad queries
  // give zeros; their outputs only ever reach pad positions, which no real token attends.
  AttentionOptions row_opt = opt;
  row_opt.key_start.clear();
  const int64_t B = q.size(0), lq = q.size(2), lk = k.size(2);
  at::Tensor out = at::empty_like(q);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t ks = opt.key_start[b], qs = first_real_query(ks, lq, lk);
    if (qs > 0) out.select(0, b).slice(1, 0, qs).zero_();
    if (qs == lq) continue;
    auto row = [&](const at::Tensor& t, int64_t from) { return t.slice(0, b, b + 1).slice(2, from); };
    out.slice(0, b, b + 1).slice(2, qs).copy_(attention_unpadded(row(q, qs), row(k, ks), row(v, ks), row_opt, scale));
  }
  return out;
}

std::string attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const AttentionOptions& opt) {
  check_shapes(q, k, v, opt);
  if (padded(opt)) {
    // The first row with pads stands for all: the rows differ only in their key and query counts.
    int64_t b = 0;
    while (opt.key_start[b] == 0) ++b;
    const int64_t ks = opt.key_start[b], qs = first_real_query(ks, q.size(2), k.size(2));
    AttentionOptions row_opt = opt;
    row_opt.key_start.clear();
    auto row = [&](const at::Tensor& t, int64_t from) { return t.slice(0, b, b + 1).slice(2, from); };
    return "rows:" + attention_backend(row(q, qs), row(k, ks), row(v, ks), row_opt);
  }
  if (direct_flash(q, k, v, opt)) return "flash";
  const SdpaCall c = sdpa_call(q, k, opt);
  const double scale = opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  std::string prefix;
  int64_t b = 0;
  if (fold_query_groups(q, k, c)) {
    auto [qg, m] = folded(q, k, *c.mask);
    prefix = "grouped-queries:";
    b = at::_fused_sdp_choice(qg, k, v, m, 0.0, false, scale, false);
  } else {
    b = at::_fused_sdp_choice(q, k, v, c.mask, 0.0, c.is_causal, scale, q.size(1) != k.size(1));
  }
  switch (b) {
    case 0: return prefix + "sdpa-math";
    case 1: return prefix + "sdpa-flash";
    case 2: return prefix + "sdpa-efficient";
    case 3: return prefix + "sdpa-cudnn";
    case 4: return prefix + "sdpa-overrideable";
  }
  return prefix + "sdpa-" + std::to_string(b);
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
    // From pinned memory the copy is asynchronous: no host stall per vision block on CUDA.
    idx = q.is_cuda() ? idx.pin_memory().to(q.device(), /*non_blocking=*/true) : idx.to(q.device());
    auto gather = [&](const at::Tensor& t) { return batch(t.index_select(1, idx), m, len); };
    at::Tensor o = attention(gather(q), gather(k), gather(v), opt);   // [m, H, len, D]
    out.index_copy_(1, idx, o.transpose(0, 1).reshape({H, m * len, D}));
  }
  return out;
}

at::Tensor ulysses_attention(const ProcessGroup& g, const std::vector<int64_t>& lens, const at::Tensor& q,
                             const at::Tensor& k, const at::Tensor& v) {
  const int64_t p = g.size(), b = q.size(0), h = q.size(1), lr = q.size(2), d = q.size(3), hp = h / p;
  if (h % p || static_cast<int64_t>(lens.size()) != p || lens[static_cast<size_t>(g.rank())] != lr)
    throw Error("Ulysses attention needs the heads to divide over the group and one length per rank",
                "nn::ulysses_attention", std::to_string(p) + " ranks dividing " + std::to_string(h) + " heads, lens[rank] = " + std::to_string(lr),
                std::to_string(lens.size()) + " lengths");
  // [3, B, H, Lr, D] -> [P, 3, B, H/P, Lr, D]: the chunk for rank j is heads j*H/P .. (j+1)*H/P.
  at::Tensor send = at::stack({q, k, v}).view({3, b, p, hp, lr, d}).permute({2, 0, 1, 3, 4, 5}).reshape({-1, d});
  std::vector<int64_t> send_rows(static_cast<size_t>(p), 3 * b * hp * lr), recv_rows;
  for (int64_t l : lens) recv_rows.push_back(3 * b * hp * l);
  at::Tensor got = g.all_to_all(send, send_rows, recv_rows);
  std::vector<at::Tensor> parts;
  int64_t off = 0;
  for (int64_t l : lens) parts.push_back(got.slice(0, off, off + 3 * b * hp * l).view({3, b, hp, l, d})), off += 3 * b * hp * l;
  at::Tensor qkv = at::cat(parts, 3);  // [3, B, H/P, L, D]
  at::Tensor o = nn::attention(qkv[0], qkv[1], qkv[2]);
  // Back: rank j gets its own tokens' rows for these heads.
  std::vector<at::Tensor> back;
  off = 0;
  for (int64_t l : lens) back.push_back(o.slice(2, off, off + l).reshape({-1, d})), off += l;
  std::vector<int64_t> back_rows, mine(static_cast<size_t>(p), b * hp * lr);
  for (int64_t l : lens) back_rows.push_back(b * hp * l);
  at::Tensor out = g.all_to_all(at::cat(back), back_rows, mine);  // [P * B * H/P * Lr, D]
  return out.view({p, b, hp, lr, d}).permute({1, 0, 2, 3, 4}).reshape({b, h, lr, d});
}


}  // namespace omniflux::nn
