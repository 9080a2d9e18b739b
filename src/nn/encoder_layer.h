#pragma once
// The pre-LN transformer encoder layer shared by the vision towers (HF SigLIP/SigLIP2, timm ViT as
// in the X-Omni SigLIP-VQ encoder; CLIP's layer has the same shape):
//   x = x + out_proj(MHA(LN1(x)))
//   x = x + fc2(act(fc1(LN2(x))))
// q/k/v are one fused projection (rows [Wq; Wk; Wv], as timm's attn.qkv); loaders holding separate
// q/k/v weights fuse them once at load time with Linear::fuse().
#include <string>

#include <ATen/core/Tensor.h>

#include "nn/attention.h"
#include "nn/layers.h"

namespace omniflux::nn {

enum class Activation { Gelu, GeluTanh, QuickGelu };

// HF / timm names: "gelu" (exact erf), "gelu_pytorch_tanh" / "gelu_new" / "gelu_tanh",
// "quick_gelu". Throws Error naming `where` otherwise.
Activation parse_activation(const std::string& name, const std::string& where);
at::Tensor activate(const at::Tensor& x, Activation act);

struct EncoderLayerWeights {
  at::Tensor ln1_w, ln1_b;
  Linear qkv;  // [3D, D]
  Linear out;  // [D, D]
  at::Tensor ln2_w, ln2_b;
  Linear fc1;  // [I, D]
  Linear fc2;  // [D, I]
};

struct EncoderLayerOptions {
  int64_t num_heads = 1;
  double eps = 1e-6;
  Activation act = Activation::GeluTanh;
  AttentionOptions attn;  // mask (bool: true = attend, or additive), causal, scale
};

// Multi-head self-attention with a fused qkv projection. x [B, L, D] -> [B, L, D].
at::Tensor self_attention(const at::Tensor& x, const Linear& qkv, const Linear& out, int64_t num_heads,
                          const AttentionOptions& opt = {});

// One pre-LN encoder layer. x [B, L, D] -> [B, L, D].
at::Tensor encoder_layer(const at::Tensor& x, const EncoderLayerWeights& w, const EncoderLayerOptions& opt);

}  // namespace omniflux::nn
