// omniflux-uniworld: UniWorld-V1 from the command line: text-to-image, editing with 1-4 reference
// images, perception prompts (depth, canny, segmentation...), and text answers.
//   omniflux-uniworld --model DIR --flux DIR --siglip DIR -p PROMPT [-i IMG ...] [-W 1024] [-H 1024]
//                     [--steps 28] [--guidance 3.5] [--seed 42] [--no-t5] [--task auto|image|text]
//                     [--no-snap] [--max-new-tokens 128] [-o out.png] [--device D] [--dtype T] [--threads N]
// Progress goes to stderr; a text answer goes to stdout. The PNG carries a "parameters" text chunk.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/uniworld.h"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: omniflux-uniworld --model DIR --flux DIR --siglip DIR -p PROMPT [-i IMAGE ...]\n"
               "                         [-W W] [-H H] [--steps N] [--guidance G] [--seed S] [--no-t5]\n"
               "                         [--task auto|image|text] [--no-snap] [--max-new-tokens N]\n"
               "                         [-o out.png] [--device D] [--dtype T] [--threads N] [--quiet]\n"
               "  -i may be given 1 to 4 times (reference images, Image 1 first). With references the\n"
               "  output size snaps to the official aspect-ratio table with anchor W x H (--no-snap: as given).\n");
}
}  // namespace

using omniflux::cli::to_double;
using omniflux::cli::g_interrupted;
using omniflux::cli::on_sigint;
using omniflux::cli::to_int;

int main(int argc, char** argv) {
  std::string model, flux, siglip, out = "out.png";
  std::vector<std::string> image_paths;
  bool quiet = false, have_prompt = false;
  omniflux::UniWorldOptions opt;
  omniflux::RuntimeOptions rt;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw omniflux::Error("missing value", a);
        return argv[++i];
      };
      if (a == "-m" || a == "--model") model = value();
      else if (a == "--flux") flux = value();
      else if (a == "--siglip") siglip = value();
      else if (a == "-p" || a == "--prompt") { opt.prompt = value(); have_prompt = true; }
      else if (a == "-i" || a == "--image") image_paths.push_back(value());
      else if (a == "-W" || a == "--width") opt.width = to_int(a, value());
      else if (a == "-H" || a == "--height") opt.height = to_int(a, value());
      else if (a == "--steps") opt.steps = to_int(a, value());
      else if (a == "--guidance") opt.guidance = to_double(a, value());
      else if (a == "--seed") opt.seed = static_cast<uint64_t>(to_int(a, value()));
      else if (a == "--no-t5") opt.use_t5 = false;
      else if (a == "--no-snap") opt.snap_to_ratio = false;
      else if (a == "--task") opt.task = omniflux::parse_uniworld_task(value());
      else if (a == "--max-new-tokens") opt.max_new_tokens = to_int(a, value());
      else if (a == "-o" || a == "--output") out = value();
      else if (a == "--device") rt.device = value();
      else if (a == "--dtype") rt.dtype = value();
      else if (a == "--threads") rt.num_threads = static_cast<int>(to_int(a, value()));
      else if (a == "--offload") rt.offload = omniflux::parse_offload(value());
      else if (a == "--max-vram") rt.max_vram_gb = to_double(a, value());
      else if (a == "--quiet") quiet = true;
      else if (a == "-h" || a == "--help") { usage(); return 0; }
      else throw omniflux::Error("unknown argument", a);
    }
    if (model.empty() || flux.empty() || siglip.empty() || !have_prompt) {
      usage();
      return 2;
    }
    // Fail before loading anything.
    if (image_paths.size() > static_cast<size_t>(omniflux::kUniWorldMaxImages))
      throw omniflux::Error("too many reference images", "-i", "1 to " + std::to_string(omniflux::kUniWorldMaxImages),
                            std::to_string(image_paths.size()));
    omniflux::flux_check_size(opt.width, opt.height);
    if (opt.steps < 1 || opt.steps > 1000) throw omniflux::Error("invalid number of steps", "--steps", "1..1000", std::to_string(opt.steps));
    if (opt.max_new_tokens < 1) throw omniflux::Error("invalid token budget", "--max-new-tokens", ">= 1", std::to_string(opt.max_new_tokens));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-uniworld: %s\n", e.what());
    usage();
    return 2;
  }

  try {
    for (const auto& p : image_paths) opt.images.push_back(omniflux::load_image(p));
    omniflux::set_num_threads(rt.num_threads);
    auto t0 = std::chrono::steady_clock::now();
    auto pipe = omniflux::UniWorldPipeline::load(model, flux, siglip, rt);
    if (!quiet) std::fprintf(stderr, "loaded %s, %s, %s\n", model.c_str(), flux.c_str(), siglip.c_str());
    std::signal(SIGINT, on_sigint);
    auto progress = [&](const std::string& stage, int64_t step, int64_t total) {
      if (!quiet) std::fprintf(stderr, "\r%s %lld/%lld   ", stage.c_str(), (long long)step, (long long)total);
      if (!quiet && (stage != "denoise" || step == total)) std::fprintf(stderr, "\n");
      return !g_interrupted.load();
    };
    const auto [h, w] = pipe.output_size(opt);
    auto r = pipe.run(opt, progress);
    if (!r) {
      std::fprintf(stderr, "omniflux-uniworld: cancelled\n");
      return 130;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!r->is_image) {
      std::printf("%s\n", r->text.c_str());
      if (!quiet) std::fprintf(stderr, "answered in %.1f s\n", s);
      return 0;
    }
    std::ostringstream params;
    params << opt.prompt << "\n"
           << "Steps: " << opt.steps << ", Guidance: " << opt.guidance << ", Seed: " << opt.seed << ", Size: " << w
           << "x" << h << ", T5: " << (opt.use_t5 ? "on" : "off") << ", Reference images: " << opt.images.size()
           << ", Model: UniWorld-V1 (" << model << "), Sampler: flow-match Euler, Software: omniflux";
    omniflux::save_png(out, r->image, {{"parameters", params.str()}});
    if (!quiet) std::fprintf(stderr, "wrote %s (%dx%d) in %.1f s\n", out.c_str(), r->image.width, r->image.height, s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-uniworld: %s\n", e.what());
    return 1;
  }
  return 0;
}
