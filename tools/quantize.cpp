// omniflux-quantize SRC DST [--weights fp8|int8|bf16] [--only SUBFOLDER ...] [--quiet]
// Writes a copy of a model folder whose block linear weights are fp8 e4m3fn or int8 with
// per-output-channel weight_scale (or bf16), in the same Hugging Face layout (io/quantize.h).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/io/quantize.h"

namespace cli = omniflux::cli;

int main(int argc, char** argv) {
  return cli::run("omniflux-quantize", [&] {
    std::string src, dst, weights = "fp8";
    omniflux::QuantizeOptions opt;
    bool quiet = false;
    cli::Parser p("omniflux-quantize",
                  "Copies a Hugging Face / diffusers model folder, writing the linear weights of its repeated blocks\n"
                  "as fp8 e4m3fn or int8 codes with a per-output-channel <name>.weight_scale (or as bf16), and\n"
                  "records a compressed-tensors quantization_config in config.json. Norms, embeddings, biases and\n"
                  "the VAE keep their dtype. Reads safetensors and PyTorch pickles; writes safetensors. DST must\n"
                  "not exist; a failed run leaves nothing behind.");
    p.positional("SRC", &src, "the model folder to read");
    p.positional("DST", &dst, "the folder to write");
    p.choice("--weights", &weights, {"fp8", "int8", "bf16"}, "storage of the block linears");
    p.texts("--only", &opt.only, "SUBFOLDER",
            "convert only this sub-folder (transformer, text_encoder_2, ... or '.' for the top); default: all "
            "but the VAE");
    p.toggle("--quiet", &quiet, "no progress on stderr");
    if (!p.parse(argc, argv)) return cli::kExitOk;
    opt.format = omniflux::parse_weight_format(weights);
    cli::check_input_folder("SRC", src);
    if (!quiet)
      opt.progress = [](const std::string& file, int64_t done, int64_t total) {
        std::fprintf(stderr, "\r%s %lld/%lld tensors   ", file.c_str(), (long long)done, (long long)total);
        if (done == total) std::fprintf(stderr, "\n");
      };
    const auto t0 = std::chrono::steady_clock::now();
    const omniflux::QuantizeReport r = omniflux::quantize_folder(src, dst, opt);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string comps;
    for (const auto& c : r.components) comps += (comps.empty() ? "" : ", ") + c;
    std::printf("%s: %lld of %lld tensors converted to %s in %s; weights %.1f MB -> %.1f MB in %.1f s\n", dst.c_str(),
                (long long)r.converted, (long long)r.tensors, omniflux::weight_format_name(opt.format), comps.c_str(),
                r.bytes_in / 1e6, r.bytes_out / 1e6, s);
    return cli::kExitOk;
  });
}
