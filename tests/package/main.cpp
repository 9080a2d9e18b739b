// A program outside the omniflux tree, built against an installed omniflux through find_package:
// the umbrella header, and an LM's prefill and decode through the public model and cache headers.
#include <cstdio>

#include <ATen/ops/zeros.h>

#include "omniflux/kv_cache.h"
#include "omniflux/models/qwen2.h"
#include "omniflux/omniflux.h"

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  auto c = omniflux::Checkpoint::open(argv[1]);
  omniflux::RuntimeOptions rt;
  rt.validate();
  // Types of every pipeline and of the ranks, so that their headers must compile on their own here.
  const bool types = sizeof(omniflux::FluxOptions) && sizeof(omniflux::UniWorldOptions) &&
                     sizeof(omniflux::XOmniOptions) && sizeof(omniflux::ParallelOptions);
  // argv[1] is a tiny Qwen2 LM: a two-token prompt, then one decoded token.
  auto lm = omniflux::Qwen2ForCausalLM::load(argv[1], rt);
  omniflux::KVCache cache = lm.new_cache(/*batch=*/1, /*capacity=*/3);
  lm.prefill(at::zeros({1, 2}, at::kLong), cache);
  const at::Tensor logits = lm.decode_one(at::zeros({1}, at::kLong), cache);
  std::printf("%zu tensors, %s, %s, lm logits %lld after %lld tokens\n", c.names().size(),
              omniflux::offload_name(rt.offload), types ? "ok" : "?", static_cast<long long>(logits.size(-1)),
              static_cast<long long>(cache.length()));
}
