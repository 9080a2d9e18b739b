#include "omniflux/nn/encoder_layer.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/nn/ops.h"

namespace omniflux::nn {

Activation parse_activation(const std::string& name, const std::string& where) {
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_tanh") return Activation::GeluTanh;
  if (name == "quick_gelu") return Activation::QuickGelu;
  throw Error("unsupported activation", where, "gelu, gelu_pytorch_tanh, gelu_new, quick_gelu", name);
}

at::Tensor activate(const at::Tensor& x, Activation act) {
  switch (act) {
    case Activation::Gelu: return nn::gelu(x);
    case Activation::GeluTanh: return nn::gelu_tanh(x);
    case Activation::QuickGelu: return nn::quick_gelu(x);
  }
  return x;
}

at::Tensor fuse_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!q.defined() && !k.defined() && !v.defined()) return {};
  if (!q.defined() || !k.defined() || !v.defined())
    throw Error("q, k and v projections must all have a bias or none", "nn::fuse_qkv");
  return at::cat({q, k, v}, 0);
}

at::Tensor self_attention(const at::Tensor& x, const at::Tensor& qkv_w, const at::Tensor& qkv_b,
                          const at::Tensor& out_w, const at::Tensor& out_b, int64_t num_heads,
                          const AttentionOptions& opt) {
  const int64_t b = x.size(0), l = x.size(1), d = qkv_w.size(0) / 3;
  if (num_heads <= 0 || d % num_heads != 0)
    throw Error("width is not a multiple of the head count", "nn::self_attention",
                "divisible by " + std::to_string(num_heads), std::to_string(d));
  // [B, L, 3D] -> [B, L, 3, H, Dh] -> [3, B, H, L, Dh]
  at::Tensor qkv = linear(x, qkv_w, qkv_b).view({b, l, 3, num_heads, d / num_heads}).permute({2, 0, 3, 1, 4});
  at::Tensor o = attention(qkv[0], qkv[1], qkv[2], opt);   // [B, H, L, Dh]
  o = o.transpose(1, 2).reshape({b, l, d});
  return linear(o, out_w, out_b);
}

at::Tensor encoder_layer(const at::Tensor& x, const EncoderLayerWeights& w, const EncoderLayerOptions& opt) {
  at::Tensor h = layer_norm(x, w.ln1_w, w.ln1_b, opt.eps);
  at::Tensor y = x + self_attention(h, w.qkv_w, w.qkv_b, w.out_w, w.out_b, opt.num_heads, opt.attn);
  h = layer_norm(y, w.ln2_w, w.ln2_b, opt.eps);
  return y + linear(activate(linear(h, w.fc1_w, w.fc1_b), opt.act), w.fc2_w, w.fc2_b);
}

}  // namespace omniflux::nn
