// omniflux-inspect PATH: lists every tensor of a safetensors file, a sharded index or a checkpoint
// folder (name, dtype, shape, bytes) after validating it. Exits 1 with the error on a bad file.
// --version prints what omniflux was built with and the devices it sees.
#include <sys/stat.h>

#include <cstdio>
#include <map>
#include <string>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"

namespace cli = omniflux::cli;

int main(int argc, char** argv) {
  return cli::run("omniflux-inspect", [&] {
    std::string path;
    cli::Parser p("omniflux-inspect",
                  "Lists every tensor of a checkpoint (name, dtype, shape, bytes) after validating it; exits 1 with\n"
                  "the error on a malformed file.");
    p.positional("PATH", &path, "a .safetensors file, a .safetensors.index.json, or a checkpoint folder");
    if (!p.parse(argc, argv)) return cli::kExitOk;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) cli::check_input_file("PATH", path);
    const omniflux::Checkpoint ckpt = omniflux::Checkpoint::open(path);
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
    return cli::kExitOk;
  });
}
