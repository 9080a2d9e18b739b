#include "nn/encoder_layer.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/ops.h"

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

at::Tensor self_attention(const at::Tensor& x, const Linear& qkv_proj, const Linear& out, int64_t num_heads,
                          const AttentionOptions& opt) {
  const int64_t b = x.size(0), l = x.size(1), d = qkv_proj.out_features() / 3;
  if (num_heads <= 0 || d % num_heads != 0)
    throw Error("width is not a multiple of the head count", "nn::self_attention",
                "divisible by " + std::to_string(num_heads), std::to_string(d));
  // [B, L, 3D] -> [B, L, 3, H, Dh] -> [3, B, H, L, Dh]
  at::Tensor qkv = qkv_proj(x).view({b, l, 3, num_heads, d / num_heads}).permute({2, 0, 3, 1, 4});
  at::Tensor o = attention(qkv[0], qkv[1], qkv[2], opt);   // [B, H, L, Dh]
  o = o.transpose(1, 2).reshape({b, l, d});
  return out(o);
}

at::Tensor encoder_layer(const at::Tensor& x, const EncoderLayerWeights& w, const EncoderLayerOptions& opt) {
  at::Tensor h = layer_norm(x, w.ln1_w, w.ln1_b, opt.eps);
  at::Tensor y = x + self_attention(h, w.qkv, w.out, opt.num_heads, opt.attn);
  h = layer_norm(y, w.ln2_w, w.ln2_b, opt.eps);
  return y + w.fc2(activate(w.fc1(h), opt.act));
}

}  // namespace omniflux::nn
