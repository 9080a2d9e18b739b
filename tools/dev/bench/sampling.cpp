// Bench case for the flow-match schedule and Euler update (a FLUX 1024^2 latent by default).
#include <ATen/ATen.h>

#include "bench.h"
#include "omniflux/sampling/flow_match.h"

OMNIFLUX_BENCH_CASE(flow_match_step, "Euler update on a packed latent; args: tokens=4096 channels=64") {
  const int64_t tokens = ctx.arg_int("tokens", 4096), ch = ctx.arg_int("channels", 64);
  auto opts = at::TensorOptions().device(ctx.rt.torch_device()).dtype(ctx.rt.compute_dtype());
  at::Tensor x = at::randn({1, tokens, ch}, opts), v = at::randn({1, tokens, ch}, opts);
  auto sched = omniflux::flow_match_schedule(28, omniflux::flow_match_mu(tokens));
  const double ms = ctx.time_ms([&] { x = omniflux::flow_match_euler_step(x, v, 0.5, 0.4); });
  ctx.report({{"shape", {1, tokens, ch}}, {"metric", "euler_step"}, {"value", ms}, {"unit", "ms"}});
}
