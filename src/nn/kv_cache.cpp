#include "nn/kv_cache.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux {

namespace {

// The most negative finite value of a floating dtype (torch.finfo(dtype).min): float's lowest
// would round to -inf in bfloat16 and float16, and a pad query whose keys are all masked must still
// get a finite softmax.
double finite_lowest(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kBFloat16: return -3.3895313892515355e38;
    case at::kHalf: return -65504.0;
    default: return std::numeric_limits<float>::lowest();
  }
}

}  // namespace

KVCache::KVCache(int64_t layers, int64_t batch, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                 at::TensorOptions options)
    : batch_(batch), capacity_(capacity) {
  if (layers < 1 || batch < 1 || kv_heads < 1 || capacity < 1 || head_dim < 1)
    throw Error("impossible KV cache size", "nn::KVCache", "layers, batch, heads, capacity, head_dim >= 1",
                shape_str({layers, batch, kv_heads, capacity, head_dim}));
  k_.reserve(layers);
  v_.reserve(layers);
  for (int64_t i = 0; i < layers; ++i) {
    k_.push_back(at::zeros({batch, kv_heads, capacity, head_dim}, options));
    v_.push_back(at::zeros({batch, kv_heads, capacity, head_dim}, options));
  }
  delta_ = at::zeros({batch}, options.dtype(at::kLong));
}

nn::AttentionOptions KVCache::begin_step(int64_t new_tokens, const at::Tensor& attention_mask) {
  if (k_.empty()) throw Error("KV cache was never allocated", "KVCache::begin_step");
  if (new_tokens < 1) throw Error("a step needs at least one token", "KVCache::begin_step");
  if (length_ + new_tokens > capacity_)
    throw Error("KV cache is full", "KVCache::begin_step",
                "at most " + std::to_string(capacity_) + " tokens",
                std::to_string(length_) + " + " + std::to_string(new_tokens));
  step_ = new_tokens;
  in_step_ = true;
  if (attention_mask.defined()) {
    if (length_ != 0)
      throw Error("an attention mask is only accepted on the first step", "KVCache::begin_step");
    if (attention_mask.dim() != 2 || attention_mask.size(0) != batch_ || attention_mask.size(1) != new_tokens)
      throw Error("attention mask has the wrong shape", "KVCache::begin_step",
                  shape_str({batch_, new_tokens}), shape_str(attention_mask.sizes().vec()));
    // Checked on the host: this is user input of the prefill, not part of the token loop.
    at::Tensor m = attention_mask.to(at::kCPU).ne(0);
    at::Tensor m_long = m.to(at::kLong);
    if (m_long.diff(1, 1).lt(0).any().item<bool>() || m_long.select(1, new_tokens - 1).eq(0).any().item<bool>())
      throw Error("only left padding is supported", "KVCache::begin_step",
                  "each row 0...0 1...1", "a mask with a gap or right padding");
    const at::Tensor real = m_long.sum(1);  // [B] on the host
    delta_ = (real - new_tokens).to(k_[0].device());
    // Pads become per-row key starts, not a key mask: each row then attends its real keys only,
    // with no mask for SDPA to fall back on (nn/attention.h).
    key_start_.clear();
    if (!m.all().item<bool>())
      for (int64_t b = 0; b < batch_; ++b) key_start_.push_back(new_tokens - real[b].item<int64_t>());
  }
  nn::AttentionOptions opt;
  if (bucket_ > 0) {
    view_ = next_view_length(new_tokens);
    const auto dev = k_[0].device();
    const auto lo = at::TensorOptions().dtype(at::kLong).device(dev);
    if (key_start_dev_.numel() != batch_ || attention_mask.defined()) {
      key_start_dev_ = at::zeros({batch_}, lo);
      if (!key_start_.empty()) key_start_dev_ = at::tensor(key_start_, at::kLong).to(dev);
    }
    // [B, 1, S, L] from device values only: key j is seen by query i when
    // key_start[b] <= j <= length + i (end-aligned causal; the bucket's tail lies beyond).
    write_at_ = length_dev_ + at::arange(new_tokens, lo);  // the step's slots, [S]
    const at::Tensor keys = at::arange(view_, lo), queries = write_at_;
    const at::Tensor seen = keys.view({1, 1, 1, -1}).le(queries.view({1, 1, -1, 1})) &
                            keys.view({1, 1, 1, -1}).ge(key_start_dev_.view({-1, 1, 1, 1}));
    const auto dtype = k_[0].scalar_type();
    opt.mask = at::zeros(seen.sizes(), k_[0].options()).masked_fill_(seen.logical_not(), finite_lowest(dtype));
    return opt;
  }
  view_ = length_ + new_tokens;
  opt.causal = true;
  opt.key_start = key_start_;
  return opt;
}

std::pair<at::Tensor, at::Tensor> KVCache::write(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  if (!in_step_) throw Error("KV cache write outside a step", "KVCache::write");
  if (layer < 0 || layer >= layers())
    throw Error("KV cache layer out of range", "KVCache::write", "< " + std::to_string(layers()),
                std::to_string(layer));
  const at::Tensor& kc = k_[layer];
  if (k.dim() != 4 || k.size(0) != batch_ || k.size(1) != kc.size(1) || k.size(2) != step_ ||
      k.size(3) != kc.size(3) || v.sizes() != k.sizes())
    throw Error("KV cache write has the wrong shape", "KVCache::write",
                shape_str({batch_, kc.size(1), step_, kc.size(3)}), shape_str(k.sizes().vec()));
  if (bucket_ > 0) {  // at the device length: no host value in the step
    k_[layer].index_copy_(2, write_at_, k);
    v_[layer].index_copy_(2, write_at_, v);
    return {k_[layer].slice(2, 0, view_), v_[layer].slice(2, 0, view_)};
  }
  const int64_t end = length_ + step_;
  k_[layer].slice(2, length_, end).copy_(k);
  v_[layer].slice(2, length_, end).copy_(v);
  return {k_[layer].slice(2, 0, end), v_[layer].slice(2, 0, end)};
}

void KVCache::end_step() {
  if (!in_step_) throw Error("KV cache end_step without begin_step", "KVCache::end_step");
  length_ += step_;
  if (bucket_ > 0) length_dev_.add_(step_);
  in_step_ = false;
}

int64_t KVCache::next_view_length(int64_t new_tokens) const {
  const int64_t end = length_ + new_tokens;
  return bucket_ > 0 ? std::min(capacity_, (end + bucket_ - 1) / bucket_ * bucket_) : end;
}

void KVCache::set_host_state(const HostState& s) {
  length_ = s.length;
  step_ = s.step;
  view_ = s.view;
  in_step_ = s.in_step;
}

void KVCache::count_replayed_step(int64_t new_tokens) {
  if (in_step_ || length_ + new_tokens > capacity_)
    throw Error("KV cache is full", "KVCache (decode graph)", "at most " + std::to_string(capacity_) + " tokens",
                std::to_string(length_) + " + " + std::to_string(new_tokens));
  view_ = next_view_length(new_tokens);  // what the replayed step viewed
  step_ = new_tokens;
  length_ += new_tokens;
}

void KVCache::sync_length_dev() {
  if (bucket_ > 0) length_dev_.fill_(length_);
}

void KVCache::use_fixed_shapes(int64_t bucket) {
  if (k_.empty()) throw Error("KV cache was never allocated", "KVCache::use_fixed_shapes");
  if (in_step_ || bucket < 1)
    throw Error("cannot switch to fixed shapes here", "KVCache::use_fixed_shapes", "a bucket >= 1, outside a step",
                std::to_string(bucket));
  bucket_ = bucket;
  length_dev_ = at::full({1}, length_, at::TensorOptions().dtype(at::kLong).device(k_[0].device()));
  key_start_dev_ = at::Tensor();
}

void KVCache::reset() {
  length_ = 0;
  step_ = 0;
  in_step_ = false;
  key_start_.clear();
  key_start_dev_ = at::Tensor();
  sync_length_dev();
  if (delta_.defined()) delta_.zero_();
}

void KVCache::rewind(int64_t length) {
  if (in_step_ || length < 0 || length > length_)
    throw Error("cannot rewind the KV cache there", "KVCache::rewind", "0.." + std::to_string(length_) + " outside a step",
                std::to_string(length));
  length_ = length;
  sync_length_dev();
}

int64_t KVCache::bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < k_.size(); ++i) n += (k_[i].numel() + v_[i].numel()) * k_[i].element_size();
  return n;
}

void KVCache::skip(int64_t n) {
  if (in_step_ || n < 0 || length_ + n > capacity_)
    throw Error("cannot skip that far in the KV cache", "KVCache::skip",
                "0.." + std::to_string(capacity_ - length_) + " outside a step", std::to_string(n));
  length_ += n;
  sync_length_dev();
}

at::Tensor KVCache::positions() const {
  if (bucket_ > 0)
    return (length_dev_ + at::arange(std::max<int64_t>(step_, 1), delta_.options())).unsqueeze(0) + delta_.unsqueeze(1);
  at::Tensor idx = at::arange(length_, length_ + std::max<int64_t>(step_, 1), delta_.options());
  return idx.unsqueeze(0) + delta_.unsqueeze(1);
}

void KVCache::set_position_delta(const at::Tensor& delta) {
  if (delta.numel() != batch_)
    throw Error("position delta needs one value per row", "KVCache::set_position_delta",
                std::to_string(batch_), shape_str(delta.sizes().vec()));
  delta_ = delta.reshape({batch_}).to(delta_.device(), at::kLong);
}

}  // namespace omniflux
