#include "omniflux/sampling/flow_match.h"

#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux {

double flow_match_mu(int64_t image_seq_len, const FlowMatchConfig& cfg) {
  if (cfg.max_image_seq_len == cfg.base_image_seq_len)
    throw Error("degenerate scheduler config", "flow_match_mu", "max_image_seq_len != base_image_seq_len",
                std::to_string(cfg.max_image_seq_len));
  const double m = (cfg.max_shift - cfg.base_shift) /
                   static_cast<double>(cfg.max_image_seq_len - cfg.base_image_seq_len);
  const double b = cfg.base_shift - m * static_cast<double>(cfg.base_image_seq_len);
  return static_cast<double>(image_seq_len) * m + b;
}

FlowMatchSchedule flow_match_schedule(int64_t n, double mu) {
  if (n < 1 || n > 10000)
    throw Error("invalid number of inference steps", "flow_match_schedule", "1..10000", std::to_string(n));
  const double e = std::exp(mu);
  // A huge scheduler shift makes exp(mu) overflow and every sigma NaN.
  if (!std::isfinite(e) || e <= 0)
    throw Error("scheduler shift out of range", "flow_match_schedule: mu (from base_shift / max_shift)",
                "exp(mu) finite and > 0", std::to_string(mu));
  at::Tensor sigmas = at::empty({n + 1}, at::kFloat);
  float* s = sigmas.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    // np.linspace(1, 1/n, n) in float64
    const double lin = n == 1 ? 1.0 : 1.0 + (1.0 / n - 1.0) * static_cast<double>(i) / static_cast<double>(n - 1);
    s[i] = static_cast<float>(e / (e + (1.0 / lin - 1.0)));
  }
  s[n] = 0.0f;
  FlowMatchSchedule out;
  out.timesteps = sigmas.slice(0, 0, n) * 1000.0f;
  out.sigmas = sigmas;
  return out;
}

at::Tensor flow_match_euler_step(const at::Tensor& x, const at::Tensor& v, double sigma, double sigma_next) {
  if (!x.sizes().equals(v.sizes()))
    throw Error("sample and velocity shapes differ", "flow_match_euler_step",
                shape_str(x.sizes().vec()), shape_str(v.sizes().vec()));
  // diffusers: sample.float() + (sigma_next - sigma) * model_output, with the sigmas as float32.
  const float dt = static_cast<float>(sigma_next) - static_cast<float>(sigma);
  return (x.to(at::kFloat) + dt * v.to(at::kFloat)).to(v.scalar_type());
}

}  // namespace omniflux
