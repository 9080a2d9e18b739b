// omniflux-flux: FLUX.1-dev text-to-image from the command line (--help lists the flags).
// Writes a PNG whose "parameters" text chunk records the prompt and settings. Ctrl-C cancels
// within one denoising step.
#include <chrono>
#include <cstdio>
#include <string>

#include "cli.h"
#include "png_parameters.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/flux.h"

namespace cli = omniflux::cli;

int main(int argc, char** argv) {
  cli::install_cancel_handler();
  return cli::run("omniflux-flux", [&] {
    std::string model, out = "out.png", tiling = "auto";
    bool quiet = false, dry_run = false;
    omniflux::FluxOptions opt;
    omniflux::RuntimeOptions rt;
    cli::Parser p("omniflux-flux", "FLUX.1-dev text-to-image; the PNG's \"parameters\" text chunk records the settings.");
    p.path("-m,--model", &model, "DIR", "the FLUX.1-dev folder").required();
    p.text("-p,--prompt", &opt.prompt, "TEXT", "the prompt").required();
    p.integer("-W,--width", &opt.width, 16, omniflux::kFluxMaxSide, "N", "output width, a multiple of 16");
    p.integer("-H,--height", &opt.height, 16, omniflux::kFluxMaxSide, "N", "output height, a multiple of 16");
    p.integer("--steps", &opt.steps, 1, 1000, "N", "denoising steps");
    p.number("--guidance", &opt.guidance, 0, 100, "G", "distilled guidance");
    p.seed("--seed", &opt.seed, "noise seed");
    p.text("--negative", &opt.negative_prompt, "TEXT", "negative prompt (true CFG with --true-cfg)");
    p.number("--true-cfg", &opt.true_cfg_scale, 0, 100, "S", "true CFG scale, used with --negative");
    p.integer("--max-sequence-length", &opt.max_sequence_length, 1, 512, "L", "T5 tokens");
    p.path("-o,--output", &out, "FILE", "the PNG to write");
    p.choice("--vae-tiling", &tiling, {"auto", "on", "off"}, "decode the VAE in tiles");
    p.toggle("--quiet", &quiet, "no progress on stderr");
    p.toggle("--dry-run", &dry_run, "print the memory plan of this request per offload mode and exit (reads no weights)");
    cli::add_runtime_flags(p, &rt);
    cli::add_parallel_flags(p);
    if (!p.parse(argc, argv)) return cli::kExitOk;
    opt.vae_tiling = tiling == "on" ? omniflux::VaeTilingMode::On
                     : tiling == "off" ? omniflux::VaeTilingMode::Off : omniflux::VaeTilingMode::Auto;
    // Everything that can be checked before loading.
    try {
      omniflux::flux_check_size(opt.width, opt.height);
    } catch (const omniflux::Error& e) {
      throw cli::UsageError(e.what_part(), opt.width % 16 ? "-W/--width" : "-H/--height", e.expected(), e.got());
    }
    cli::check_input_folder("-m/--model", model);
    cli::check_output_file("-o/--output", out);
    if (!dry_run) cli::join_ranks(rt);
    if (!dry_run) cli::apply_runtime(rt);  // a dry run plans for devices this machine need not have
    quiet = quiet || !rt.writes_output();  // rank 0 reports progress and writes
    if (dry_run) {
      omniflux::plan::FluxRequest req;
      req.width = opt.width;
      req.height = opt.height;
      req.t5_tokens = opt.max_sequence_length;
      req.batch = opt.true_cfg_scale > 1 && opt.negative_prompt ? 2 : 1;
      omniflux::plan::DryRunOptions dro;  // one rank's plan with --nproc N
      dro.rt.parallel = rt.parallel = cli::simulated_ranks();
      return cli::print_dry_run(omniflux::plan::plan_flux(model, req, dro), rt);
    }

    auto t0 = std::chrono::steady_clock::now();
    auto pipe = omniflux::FluxPipeline::load(model, rt);
    if (!quiet) std::fprintf(stderr, "loaded %s\n", model.c_str());
    if (!cli::keep_going(rt)) return cli::kExitCancelled;
    auto progress = [&](const std::string& stage, int64_t step, int64_t total) {
      if (!quiet) std::fprintf(stderr, "\r%s %lld/%lld   ", stage.c_str(), (long long)step, (long long)total);
      return cli::keep_going(rt);
    };
    auto image = pipe.generate(opt, progress);
    if (!quiet) std::fprintf(stderr, "\n");
    if (!image) return cli::kExitCancelled;
    if (!rt.writes_output()) return cli::kExitOk;
    omniflux::save_png(out, *image,
                       {{"parameters", cli::flux_parameters(opt, "FLUX.1-dev (" + model + ")", "omniflux")}});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) std::fprintf(stderr, "wrote %s (%dx%d) in %.1f s\n", out.c_str(), image->width, image->height, s);
    return cli::kExitOk;
  });
}
