// omniflux-uniworld: UniWorld-V1 from the command line: text-to-image, editing with 1-4 reference
// images, perception prompts (depth, canny, segmentation...), and text answers (--help lists the
// flags). Progress goes to stderr; a text answer goes to stdout. The PNG carries a "parameters"
// text chunk.
#include <chrono>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "cli.h"
#include "png_parameters.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/uniworld.h"

namespace cli = omniflux::cli;

int main(int argc, char** argv) {
  cli::install_cancel_handler();
  return cli::run("omniflux-uniworld", [&] {
    std::string model, flux, siglip, out = "out.png", task = "auto";
    std::vector<std::string> image_paths;
    bool quiet = false, no_t5 = false, no_snap = false, dry_run = false, parse_special = false;
    omniflux::UniWorldOptions opt;
    omniflux::RuntimeOptions rt;
    cli::Parser p("omniflux-uniworld",
                  "UniWorld-V1: text-to-image, editing with 1 to 4 reference images, perception prompts, and text\n"
                  "answers. With references the output size snaps to the official aspect-ratio table with anchor\n"
                  "W x H (--no-snap: as given).");
    p.path("-m,--model", &model, "DIR", "the UniWorld-V1 folder").required();
    p.path("--flux", &flux, "DIR", "the FLUX.1-dev folder").required();
    p.path("--siglip", &siglip, "DIR", "the SigLIP folder").required();
    p.text("-p,--prompt", &opt.prompt, "TEXT", "the prompt or question").required();
    // No count limit here: more than kUniWorldMaxImages is reported below in the pipeline's words.
    p.paths("-i,--image", &image_paths, "IMAGE", "a reference image (Image 1 first)");
    p.integer("-W,--width", &opt.width, 16, omniflux::kFluxMaxSide, "N", "output width (the anchor with references)");
    p.integer("-H,--height", &opt.height, 16, omniflux::kFluxMaxSide, "N", "output height (the anchor with references)");
    p.integer("--steps", &opt.steps, 1, 1000, "N", "denoising steps");
    p.number("--guidance", &opt.guidance, 0, 100, "G", "distilled guidance");
    p.seed("--seed", &opt.seed, "noise seed");
    p.toggle("--no-t5", &no_t5, "do not append the T5 tokens");
    p.choice("--task", &task, {"auto", "image", "text"}, "auto lets the task head choose");
    p.toggle("--no-snap", &no_snap, "use W x H as given with references");
    p.integer("--max-new-tokens", &opt.max_new_tokens, 1, 32768, "N", "length limit of a text answer");
    p.path("-o,--output", &out, "FILE", "the PNG to write (an image answer)");
    p.toggle("--quiet", &quiet, "no progress on stderr");
    p.toggle("--parse-special-tokens", &parse_special,
             "read special-token text in the prompt (<|im_start|>, <|image_pad|>, ...) as those tokens, as Hugging Face does; default: as plain text");
    p.toggle("--dry-run", &dry_run, "print the memory plan of this request per offload mode and exit (reads no weights)");
    cli::add_runtime_flags(p, &rt);
    cli::add_parallel_flags(p);
    if (!p.parse(argc, argv)) return cli::kExitOk;
    opt.use_t5 = !no_t5;
    opt.snap_to_ratio = !no_snap;
    opt.task = omniflux::parse_uniworld_task(task);

    // Everything that can be checked before loading: the images, the snapped size, the paths.
    if (image_paths.size() > static_cast<size_t>(omniflux::kUniWorldMaxImages))
      throw cli::UsageError("too many reference images", "-i/--image", "0 to " + std::to_string(omniflux::kUniWorldMaxImages),
                            std::to_string(image_paths.size()));
    try {
      omniflux::flux_check_size(opt.width, opt.height);
    } catch (const omniflux::Error& e) {
      throw cli::UsageError(e.what_part(), opt.width % 16 ? "-W/--width" : "-H/--height", e.expected(), e.got());
    }
    for (const auto& path : image_paths) {
      if (!cli::reads_inputs()) break;  // rank 0 reads them and shares them after join_ranks
      cli::check_input_file("-i/--image", path);
      opt.images.push_back(omniflux::load_image(path));
    }
    if (opt.task != omniflux::UniWorldTask::Text) {
      try {
        (void)omniflux::UniWorldPipeline::output_size(opt);
      } catch (const omniflux::Error& e) {
        throw omniflux::Error("the output size snapped to the aspect-ratio table is out of range", "-W/-H",
                              e.expected(), e.got() + " (from anchor " + std::to_string(opt.width) + "x" +
                                                std::to_string(opt.height) + "; --no-snap keeps W x H)");
      }
      cli::check_output_file("-o/--output", out);
    }
    cli::check_input_folder("-m/--model", model);
    cli::check_input_folder("--flux", flux);
    cli::check_input_folder("--siglip", siglip);
    if (!dry_run) cli::join_ranks(rt);
    cli::share_images(opt.images, rt);
    if (!dry_run) cli::apply_runtime(rt);  // a dry run plans for devices this machine need not have
    quiet = quiet || !rt.writes_output();  // rank 0 reports progress and writes
    if (dry_run) {
      omniflux::plan::UniWorldRequest req;
      std::tie(req.height, req.width) = omniflux::UniWorldPipeline::output_size(opt);
      req.ref_images = static_cast<int64_t>(opt.images.size());
      if (!opt.images.empty()) {
        req.ref_width = opt.images[0].width;
        req.ref_height = opt.images[0].height;
      }
      req.prompt = opt.prompt;
      req.t5 = opt.use_t5;
      req.t5_tokens = opt.max_sequence_length;
      omniflux::plan::DryRunOptions dro;  // one rank's plan with --nproc N
      dro.rt.parallel = rt.parallel = cli::simulated_ranks();
      return cli::print_dry_run(omniflux::plan::plan_uniworld(model, flux, siglip, req, dro), rt);
    }

    auto t0 = std::chrono::steady_clock::now();
    auto pipe = omniflux::UniWorldPipeline::load(model, flux, siglip, rt);
    if (parse_special) pipe.set_prompt_special_tokens(omniflux::text::PromptSpecialTokens::Parse);
    if (!quiet) std::fprintf(stderr, "loaded %s, %s, %s\n", model.c_str(), flux.c_str(), siglip.c_str());
    if (!cli::keep_going(rt)) return cli::kExitCancelled;
    auto progress = [&](const std::string& stage, int64_t step, int64_t total) {
      if (stage == "answer") return cli::keep_going(rt);  // per token: the answer prints at the end
      if (!quiet) std::fprintf(stderr, "\r%s %lld/%lld   ", stage.c_str(), (long long)step, (long long)total);
      if (!quiet && (stage != "denoise" || step == total)) std::fprintf(stderr, "\n");
      return cli::keep_going(rt);
    };
    const auto [h, w] = pipe.output_size(opt);
    auto r = pipe.run(opt, progress);
    if (!r) return cli::kExitCancelled;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!rt.writes_output()) return cli::kExitOk;
    if (const std::string* text = std::get_if<std::string>(&*r)) {
      std::printf("%s\n", text->c_str());
      if (!quiet) std::fprintf(stderr, "answered in %.1f s\n", s);
      return cli::kExitOk;
    }
    const omniflux::Image& image = std::get<omniflux::Image>(*r);
    cli::check_output_file("-o/--output", out);  // --task auto chose an image: checked only now
    omniflux::save_png(out, image,
                       {{"parameters", cli::uniworld_parameters(opt, w, h, "UniWorld-V1 (" + model + ")", "omniflux")}});
    if (!quiet) std::fprintf(stderr, "wrote %s (%dx%d) in %.1f s\n", out.c_str(), image.width, image.height, s);
    return cli::kExitOk;
  });
}
