#pragma once
// Flow-match Euler sampling as pure functions (diffusers FlowMatchEulerDiscreteScheduler with
// dynamic shifting, as FLUX.1-dev configures it).
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace omniflux {

struct FlowMatchConfig {  // defaults: FLUX.1-dev scheduler/scheduler_config.json
  int64_t base_image_seq_len = 256;
  int64_t max_image_seq_len = 4096;
  double base_shift = 0.5;
  double max_shift = 1.15;
};

// mu of the time shift, linear in the packed image sequence length (diffusers calculate_shift).
double flow_match_mu(int64_t image_seq_len, const FlowMatchConfig& cfg = {});

struct FlowMatchSchedule {
  at::Tensor sigmas;     // float32 [n + 1], the last one 0
  at::Tensor timesteps;  // float32 [n], sigmas * 1000
};

// linspace(1, 1/n, n) shifted by exp(mu) / (exp(mu) + (1/s - 1)). The shift is computed in float64
// and cast to float32, as diffusers v0.31 (the fixtures' version) does.
FlowMatchSchedule flow_match_schedule(int64_t num_steps, double mu);

// One Euler step x + (sigma_next - sigma) * v, computed in float32 and returned in v's dtype.
at::Tensor flow_match_euler_step(const at::Tensor& x, const at::Tensor& v, double sigma, double sigma_next);

}  // namespace omniflux
