// omniflux-flux: FLUX.1-dev text-to-image from the command line.
//   omniflux-flux -m DIR -p PROMPT [-W 1024] [-H 1024] [--steps 28] [--guidance 3.5] [--seed 0]
//                 [--negative TEXT --true-cfg 4.0] [--max-sequence-length 512] [-o out.png]
//                 [--device cpu|cuda] [--dtype auto|float32|bfloat16] [--threads N]
// Writes a PNG whose "parameters" text chunk records the prompt and settings. Ctrl-C cancels
// within one denoising step.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/flux.h"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: omniflux-flux -m DIR -p PROMPT [-W W] [-H H] [--steps N] [--guidance G] [--seed S]\n"
               "                     [--negative TEXT] [--true-cfg S] [--max-sequence-length L] [-o out.png]\n"
               "                     [--device D] [--dtype T] [--threads N] [--vae-tiling auto|on|off] [--quiet]\n");
}
}  // namespace

using omniflux::cli::to_double;
using omniflux::cli::g_interrupted;
using omniflux::cli::on_sigint;
using omniflux::cli::to_int;

int main(int argc, char** argv) {
  std::string model, out = "out.png";
  bool quiet = false;
  omniflux::FluxGenerateOptions opt;
  omniflux::RuntimeOptions rt;
  bool have_prompt = false;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw omniflux::Error("missing value", a);
        return argv[++i];
      };
      if (a == "-m" || a == "--model") model = value();
      else if (a == "-p" || a == "--prompt") { opt.prompt = value(); have_prompt = true; }
      else if (a == "-W" || a == "--width") opt.width = to_int(a, value());
      else if (a == "-H" || a == "--height") opt.height = to_int(a, value());
      else if (a == "--steps") opt.steps = to_int(a, value());
      else if (a == "--guidance") opt.guidance = to_double(a, value());
      else if (a == "--seed") opt.seed = static_cast<uint64_t>(to_int(a, value()));
      else if (a == "--negative") opt.negative_prompt = value();
      else if (a == "--true-cfg") opt.true_cfg_scale = to_double(a, value());
      else if (a == "--max-sequence-length") opt.max_sequence_length = to_int(a, value());
      else if (a == "-o" || a == "--output") out = value();
      else if (a == "--device") rt.device = value();
      else if (a == "--dtype") rt.dtype = value();
      else if (a == "--threads") rt.num_threads = static_cast<int>(to_int(a, value()));
      else if (a == "--offload") rt.offload = omniflux::parse_offload(value());
      else if (a == "--max-vram") rt.max_vram_gb = to_double(a, value());
      else if (a == "--vae-tiling") {
        std::string v = value();
        if (v == "auto") opt.vae_tiling = omniflux::VaeTilingMode::Auto;
        else if (v == "on") opt.vae_tiling = omniflux::VaeTilingMode::On;
        else if (v == "off") opt.vae_tiling = omniflux::VaeTilingMode::Off;
        else throw omniflux::Error("unknown tiling mode", a, "auto, on or off", v);
      } else if (a == "--quiet") quiet = true;
      else if (a == "-h" || a == "--help") { usage(); return 0; }
      else throw omniflux::Error("unknown argument", a);
    }
    if (model.empty() || !have_prompt) {
      usage();
      return 2;
    }
    omniflux::flux_check_size(opt.width, opt.height);  // fail before loading anything
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-flux: %s\n", e.what());
    usage();
    return 2;
  }

  try {
    omniflux::set_num_threads(rt.num_threads);
    auto t0 = std::chrono::steady_clock::now();
    auto pipe = omniflux::FluxPipeline::load(model, rt);
    if (!quiet) std::fprintf(stderr, "loaded %s\n", model.c_str());
    std::signal(SIGINT, on_sigint);
    auto progress = [&](const std::string& stage, int64_t step, int64_t total) {
      if (!quiet) std::fprintf(stderr, "\r%s %lld/%lld   ", stage.c_str(), (long long)step, (long long)total);
      return !g_interrupted.load();
    };
    auto image = pipe.generate(opt, progress);
    if (!quiet) std::fprintf(stderr, "\n");
    if (!image) {
      std::fprintf(stderr, "omniflux-flux: cancelled\n");
      return 130;
    }
    std::ostringstream params;
    params << opt.prompt << "\n";
    if (opt.negative_prompt) params << "Negative prompt: " << *opt.negative_prompt << "\n";
    params << "Steps: " << opt.steps << ", Guidance: " << opt.guidance << ", True CFG: " << opt.true_cfg_scale
           << ", Seed: " << opt.seed << ", Size: " << opt.width << "x" << opt.height
           << ", Max sequence length: " << opt.max_sequence_length << ", Model: FLUX.1-dev (" << model
           << "), Sampler: flow-match Euler, Software: omniflux";
    omniflux::save_png(out, *image, {{"parameters", params.str()}});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) std::fprintf(stderr, "wrote %s (%dx%d) in %.1f s\n", out.c_str(), image->width, image->height, s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-flux: %s\n", e.what());
    return 1;
  }
  return 0;
}
