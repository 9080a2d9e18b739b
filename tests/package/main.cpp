// A program outside the omniflux tree, built against an installed omniflux through find_package.
#include <cstdio>
#include "omniflux/io/safetensors.h"
int main(int argc, char** argv) { auto c = omniflux::Checkpoint::open(argv[1]); std::printf("%zu tensors\n", c.names().size()); }
