// Parity case flow_match_scheduler: sigmas, timesteps and mu for three (steps, seq_len) pairs, and
// a 4-step Euler loop on given velocities.
#include <ATen/ATen.h>

#include "omniflux/sampling/flow_match.h"
#include "parity.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(flow_match_scheduler) {
  ParityOutputs out;
  auto schedule = [&](const std::string& p) {
    const int64_t n = ctx.input(p + "_num_inference_steps").item<int64_t>();
    const double mu = omniflux::flow_match_mu(ctx.input(p + "_image_seq_len").item<int64_t>());
    auto s = omniflux::flow_match_schedule(n, mu);
    out[p + "_mu"] = at::tensor({static_cast<float>(mu)});
    out[p + "_sigmas"] = s.sigmas;
    out[p + "_timesteps"] = s.timesteps;
    return s;
  };
  for (const char* p : {"s0", "s1", "s2"}) schedule(p);
  auto s = schedule("euler");
  out.erase("euler_mu");
  at::Tensor x = ctx.input("euler_sample"), v = ctx.input("euler_model_outputs");
  const float* sig = s.sigmas.data_ptr<float>();
  for (int64_t i = 0; i < v.size(0); ++i) {
    x = omniflux::flow_match_euler_step(x, v[i], sig[i], sig[i + 1]);
    if (i == 0) out["euler_step0_prev_sample"] = x;
  }
  out["euler_loop_final_sample"] = x;
  return out;
}
