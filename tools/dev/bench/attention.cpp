// Bench case attention: which kernel nn::attention runs (nn::attention_backend: "flash" when it calls
// the flash kernel itself, else "sdpa-<LibTorch's choice>", "rows:" for left-padded rows run one by
// one) for each attention the models run, at the real shapes (small=1: 1/8 of the tokens, for CPU
// runs), and its time. The decode shapes run at three key lengths: a kernel whose plan is keyed on
// the exact length (cuDNN's) shows there as a first-call cost per length.
#include <algorithm>
#include <chrono>
#include <string>

#include <ATen/ATen.h>

#include "bench.h"
#include "nn/attention.h"

namespace {

struct Shape {
  const char* name;
  int64_t batch, hq, hkv, lq, lk, d;
  // 0 none, 1 causal, 2 causal with row 1 left-padded (per-row key starts), 3 float bias
  // [1, H, Lq, Lk], 4 a decode graph's fixed-shape step: an additive key mask [B, 1, 1, Lk] over the
  // bucket's tail (and row 1's pads), the same key length at every step
  int mask;
  double scale;  // 0: 1/sqrt(d)
};

}  // namespace

OMNIFLUX_BENCH_CASE(attention, "kernel run (backend) and ms per attention shape of the models; args: small=0|1 (CPU default 1)") {
  const bool small = ctx.arg_int("small", ctx.rt.torch_device().is_cuda() ? 0 : 1) != 0;
  const int64_t f = small ? 8 : 1;
  const Shape shapes[] = {
      {"flux_joint_1024px", 1, 24, 24, (4096 + 512) / f, (4096 + 512) / f, 128, 0, 0},
      {"uniworld_joint_edit", 1, 24, 24, (4096 + 2842) / f, (4096 + 2842) / f, 128, 0, 0},
      {"qwen_prefill_causal_gqa", 1, 28, 4, 2048 / f, 2048 / f, 128, 1, 0},
      {"qwen_prefill_after_cache", 1, 28, 4, 256 / f, 2048 / f, 128, 1, 0},
      {"qwen_decode_gqa", 1, 28, 4, 1, 2048 / f, 128, 1, 0},
      {"xomni_cfg_prefill_padded", 2, 28, 4, 32, 32, 128, 2, 0},
      {"xomni_cfg_decode_padded", 2, 28, 4, 1, 5205 / f, 128, 2, 0},
      {"qwen_decode_fixed_bucket", 1, 28, 4, 1, 2048 / f, 128, 4, 0},
      {"xomni_cfg_decode_fixed_bucket", 2, 28, 4, 1, 5376 / f, 128, 4, 0},
      {"qwen_vl_vision_window", 32 / (small ? 4 : 1), 16, 16, 64, 64, 80, 0, 0},
      {"qwen_vl_vision_full", 2, 16, 16, 1024 / f, 1024 / f, 80, 0, 0},
      {"siglip_512px", 2, 16, 16, 1024 / f, 1024 / f, 72, 0, 0},
      {"siglip_vq_vit_1152px", 1, 16, 16, 5184 / f, 5184 / f, 96, 0, 0},
      {"t5_bias_512", 1, 64, 64, 512 / f, 512 / f, 64, 3, 1.0},
      {"vae_mid_1024px", 1, 1, 1, 16384 / f, 16384 / f, 512, 0, 0},
  };
  const auto o = at::TensorOptions().device(ctx.rt.torch_device()).dtype(ctx.rt.compute_dtype());
  for (const Shape& s : shapes) {
    const bool decode = s.lq == 1;
    // Decode grows the keys by one each token: three lengths in a row, each timed on its first call
    // (a plan build per length would show here) and then as usual.
    const int64_t lengths = decode && s.mask != 4 ? 3 : 1;
    for (int64_t j = 0; j < lengths; ++j) {
      const int64_t lk = s.lk + j;
      at::Tensor q = at::randn({s.batch, s.hq, s.lq, s.d}, o), k = at::randn({s.batch, s.hkv, lk, s.d}, o),
                 v = at::randn({s.batch, s.hkv, lk, s.d}, o);
      omniflux::nn::AttentionOptions opt;
      if (s.scale > 0) opt.scale = s.scale;
      if (s.mask == 1 || s.mask == 2) opt.causal = true;
      if (s.mask == 2) {  // the negative prompt row is 7 tokens shorter
        opt.key_start.assign(s.batch, 0);
        opt.key_start.back() = std::min<int64_t>(7, lk - 1);
      }
      if (s.mask == 3) opt.mask = at::randn({1, s.hq, s.lq, lk}, o);
      if (s.mask == 4) {  // about half a bucket of tail (KVCache's mask: finite lowest, not -inf)
        opt.mask = at::zeros({s.batch, 1, 1, lk}, o);
        opt.mask.slice(3, lk - std::min<int64_t>(128, lk / 2)).fill_(-1e30);
        if (s.batch > 1) opt.mask[s.batch - 1].slice(2, 0, 7).fill_(-1e30);
      }
      const std::string backend = omniflux::nn::attention_backend(q, k, v, opt);
      ctx.sync();
      const auto t0 = std::chrono::steady_clock::now();
      (void)omniflux::nn::attention(q, k, v, opt);
      ctx.sync();
      const double first_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const double ms = ctx.time_ms([&] { (void)omniflux::nn::attention(q, k, v, opt); });
      ctx.report({{"shape", {{"name", s.name}, {"batch", s.batch}, {"heads", s.hq}, {"kv_heads", s.hkv}, {"lq", s.lq},
                             {"lk", lk}, {"head_dim", s.d}}},
                  {"metric", "attention"}, {"backend", backend}, {"first_call_ms", first_ms}, {"value", ms},
                  {"unit", "ms"}});
    }
  }
}
