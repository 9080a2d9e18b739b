// A program outside the omniflux tree, built against an installed omniflux through find_package
// and the umbrella header alone.
#include <cstdio>

#include "omniflux/omniflux.h"

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  auto c = omniflux::Checkpoint::open(argv[1]);
  omniflux::RuntimeOptions rt;
  rt.validate();
  // Types of every pipeline and of the ranks, so that their headers must compile on their own here.
  const bool types = sizeof(omniflux::FluxOptions) && sizeof(omniflux::UniWorldOptions) &&
                     sizeof(omniflux::XOmniOptions) && sizeof(omniflux::ParallelOptions);
  std::printf("%zu tensors, %s, %s\n", c.names().size(), omniflux::offload_name(rt.offload), types ? "ok" : "?");
}
