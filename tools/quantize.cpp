// omniflux-quantize SRC DST [--weights fp8|int8|bf16] [--only COMPONENT ...] [--quiet]
// Writes a copy of a model folder whose block linear weights are fp8 e4m3fn or int8 with
// per-output-channel weight_scale (or bf16), in the same Hugging Face layout (io/quantize.h).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "omniflux/error.h"
#include "omniflux/io/quantize.h"

namespace {
void usage() {
  std::fprintf(stderr,
               "usage: omniflux-quantize SRC DST [--weights fp8|int8|bf16] [--only COMPONENT ...] [--quiet]\n"
               "  COMPONENT is a sub-folder holding weights (transformer, text_encoder_2, ...) or '.' for the top.\n"
               "  Without --only every weight folder but the VAE is converted.\n");
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  omniflux::QuantizeOptions opt;
  bool quiet = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw omniflux::Error("missing value", a);
        return argv[++i];
      };
      if (a == "--weights") opt.format = omniflux::parse_weight_format(value());
      else if (a == "--only") opt.only.push_back(value());
      else if (a == "--quiet") quiet = true;
      else if (a == "-h" || a == "--help") { usage(); return 0; }
      else if (!a.empty() && a[0] == '-') throw omniflux::Error("unknown option", a);
      else positional.push_back(a);
    }
    if (positional.size() != 2) throw omniflux::Error("expected SRC and DST", "arguments", "2", std::to_string(positional.size()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-quantize: %s\n", e.what());
    usage();
    return 2;
  }
  try {
    if (!quiet)
      opt.progress = [](const std::string& file, int64_t done, int64_t total) {
        std::fprintf(stderr, "\r%s %lld/%lld tensors   ", file.c_str(), (long long)done, (long long)total);
        if (done == total) std::fprintf(stderr, "\n");
      };
    const auto t0 = std::chrono::steady_clock::now();
    const omniflux::QuantizeReport r = omniflux::quantize_folder(positional[0], positional[1], opt);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string comps;
    for (const auto& c : r.components) comps += (comps.empty() ? "" : ", ") + c;
    std::printf("%s: %lld of %lld tensors converted to %s in %s; weights %.1f MB -> %.1f MB in %.1f s\n",
                positional[1].c_str(), (long long)r.converted, (long long)r.tensors,
                omniflux::weight_format_name(opt.format), comps.c_str(), r.bytes_in / 1e6, r.bytes_out / 1e6, s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-quantize: %s\n", e.what());
    return 1;
  }
  return 0;
}
