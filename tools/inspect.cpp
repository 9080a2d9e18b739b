// omniflux-inspect PATH: lists every tensor of a safetensors file, a sharded index or a checkpoint
// folder (name, dtype, shape, bytes) after validating it. Exits 1 with the error on a bad file.
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"

namespace {
void usage() {
  std::fprintf(stderr,
               "usage: omniflux-inspect PATH\n"
               "  PATH: a .safetensors file, a .safetensors.index.json, or a checkpoint folder\n");
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0) {
    usage();
    return argc == 2 ? 0 : 2;
  }
  try {
    const omniflux::Checkpoint ckpt = omniflux::Checkpoint::open(argv[1]);
    uint64_t total = 0;
    std::map<std::string, std::pair<size_t, uint64_t>> by_dtype;
    for (const auto& name : ckpt.names()) {
      const omniflux::TensorInfo& t = ckpt.info(name);
      std::printf("%-72s %-8s %-24s %12llu\n", name.c_str(), omniflux::dtype_name(t.dtype),
                  omniflux::shape_str(t.shape).c_str(), static_cast<unsigned long long>(t.nbytes()));
      total += t.nbytes();
      auto& d = by_dtype[omniflux::dtype_name(t.dtype)];
      d.first++;
      d.second += t.nbytes();
    }
    std::printf("\n%s: %zu tensors in %zu file(s), %llu bytes of data\n", ckpt.path().c_str(),
                ckpt.names().size(), ckpt.files().size(), static_cast<unsigned long long>(total));
    for (const auto& [dt, cnt] : by_dtype)
      std::printf("  %-8s %6zu tensors %14llu bytes\n", dt.c_str(), cnt.first,
                  static_cast<unsigned long long>(cnt.second));
    for (const auto& [k, v] : ckpt.metadata()) std::printf("  metadata %s = %s\n", k.c_str(), v.c_str());
    std::printf("valid\n");
    return 0;
  } catch (const omniflux::Error& e) {
    std::fprintf(stderr, "omniflux-inspect: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-inspect: unexpected error: %s\n", e.what());
    return 1;
  }
}
