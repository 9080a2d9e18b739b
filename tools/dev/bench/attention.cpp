// Bench case attention: which SDPA backend LibTorch picks (at::_fused_sdp_choice) for each attention
// the models run, at the real shapes (small=1: 1/8 of the tokens, for CPU runs), and its time.
// Backends: 0 math, 1 flash, 2 memory-efficient, 3 cuDNN (4 overrideable).
#include <ATen/ATen.h>

#include "bench.h"
#include "omniflux/nn/attention.h"

namespace {

const char* backend_name(int64_t b) {
  switch (b) {
    case 0: return "math";
    case 1: return "flash";
    case 2: return "efficient";
    case 3: return "cudnn";
    case 4: return "overrideable";
  }
  return "error";
}

struct Shape {
  const char* name;
  int64_t batch, hq, hkv, lq, lk, d;
  int mask;  // 0 none, 1 causal (square: is_causal), 2 additive key mask [B, 1, 1, Lk] + causal, 3 float bias [1, H, Lq, Lk]
  double scale;  // 0: 1/sqrt(d)
};

}  // namespace

OMNIFLUX_BENCH_CASE(attention, "SDPA backend and ms per attention shape of the models; args: small=0|1 (CPU default 1)") {
  const bool small = ctx.arg_int("small", ctx.rt.torch_device().is_cuda() ? 0 : 1) != 0;
  const int64_t f = small ? 8 : 1;
  const Shape shapes[] = {
      {"flux_joint_1024px", 1, 24, 24, (4096 + 512) / f, (4096 + 512) / f, 128, 0, 0},
      {"uniworld_joint_edit", 1, 24, 24, (4096 + 2842) / f, (4096 + 2842) / f, 128, 0, 0},
      {"qwen_prefill_causal_gqa", 1, 28, 4, 2048 / f, 2048 / f, 128, 1, 0},
      {"qwen_decode_gqa", 1, 28, 4, 1, 2048 / f, 128, 1, 0},
      {"xomni_cfg_prefill_padded", 2, 28, 4, 32, 32, 128, 2, 0},
      {"xomni_cfg_decode_padded", 2, 28, 4, 1, 5205 / f, 128, 2, 0},
      {"qwen_vl_vision_window", 32 / (small ? 4 : 1), 16, 16, 64, 64, 80, 0, 0},
      {"qwen_vl_vision_full", 2, 16, 16, 1024 / f, 1024 / f, 80, 0, 0},
      {"siglip_512px", 2, 16, 16, 1024 / f, 1024 / f, 72, 0, 0},
      {"siglip_vq_vit_1152px", 1, 16, 16, 5184 / f, 5184 / f, 96, 0, 0},
      {"t5_bias_512", 1, 64, 64, 512 / f, 512 / f, 64, 3, 1.0},
      {"vae_mid_1024px", 1, 1, 1, 16384 / f, 16384 / f, 512, 0, 0},
  };
  const auto o = at::TensorOptions().device(ctx.rt.torch_device()).dtype(ctx.rt.compute_dtype());
  for (const Shape& s : shapes) {
    at::Tensor q = at::randn({s.batch, s.hq, s.lq, s.d}, o), k = at::randn({s.batch, s.hkv, s.lk, s.d}, o),
               v = at::randn({s.batch, s.hkv, s.lk, s.d}, o);
    omniflux::nn::AttentionOptions opt;
    if (s.scale > 0) opt.scale = s.scale;
    std::optional<at::Tensor> m;  // the mask SDPA gets, for the backend query
    bool is_causal = false;
    if (s.mask == 1) {
      opt.causal = true;
      is_causal = s.lq == s.lk && s.lq > 1;
    } else if (s.mask == 2) {
      opt.causal = true;
      opt.mask = at::zeros({s.batch, 1, 1, s.lk}, o);
      m = s.lq > 1 ? (opt.mask + at::zeros({s.lq, s.lk}, o)) : opt.mask;
    } else if (s.mask == 3) {
      opt.mask = at::randn({1, s.hq, s.lq, s.lk}, o);
      m = opt.mask;
    }
    const int64_t backend = at::_fused_sdp_choice(q, k, v, m, 0.0, is_causal, opt.scale, s.hq != s.hkv);
    const double ms = ctx.time_ms([&] { (void)omniflux::nn::attention(q, k, v, opt); });
    ctx.report({{"shape", {{"name", s.name}, {"batch", s.batch}, {"heads", s.hq}, {"kv_heads", s.hkv}, {"lq", s.lq},
                           {"lk", s.lk}, {"head_dim", s.d}}},
                {"metric", "sdpa"}, {"backend", backend_name(backend)}, {"value", ms}, {"unit", "ms"}});
  }
}
