// omniflux-dist-worker: one request of a pipeline as one rank (or, with --nproc, as N ranks), for
// tests/distributed. Rank 0 writes what the tests compare: the final latents (latents.f32, the
// last "flux.step_latents" tap as raw float32), the image (image.png), image codes (codes.txt) and
// text answers (text.txt). Every rank R writes the text tokens it sampled (tokens.R.txt) and the
// last language-model layer output it computed (lm.R.f32, raw float32). --die-rank R --die-step K kills rank R at denoising step K (SIGKILL).
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "nn/debug.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"

namespace cli = omniflux::cli;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  return cli::run("omniflux-dist-worker", [&] {
    std::string which, model, flux, siglip, out;
    std::vector<std::string> images;
    std::string prompt = "a red cube on a table";
    std::optional<std::string> negative;
    double true_cfg = 1.0, lm_cfg = 1.0;
    int64_t steps = 3, width = 64, height = 48, die_rank = -1, die_step = -1;
    bool text = false;
    omniflux::RuntimeOptions rt;
    cli::Parser p("omniflux-dist-worker", "one pipeline request as one of several ranks (tests/distributed)");
    p.choice("--case", &which, {"flux", "uniworld", "xomni"}, "the pipeline").required();
    p.path("-m,--model", &model, "DIR", "the model folder (FLUX.1-dev, UniWorld-V1 or X-Omni)").required();
    p.path("--flux", &flux, "DIR", "the FLUX.1-dev folder (UniWorld, X-Omni)");
    p.path("--siglip", &siglip, "DIR", "the SigLIP2 folder (UniWorld)");
    p.paths("-i,--image", &images, "PNG", "a reference image (UniWorld) or the chat image (X-Omni)", 4);
    p.path("--out", &out, "DIR", "where rank 0 writes").required();
    p.text("-p,--prompt", &prompt, "TEXT", "the prompt");
    p.text("--negative", &negative, "TEXT", "FLUX negative prompt");
    p.number("--true-cfg", &true_cfg, 0, 100, "S", "FLUX true CFG scale");
    p.number("--cfg", &lm_cfg, 0, 100, "G", "X-Omni LM CFG scale");
    p.integer("--steps", &steps, 1, 100, "N", "denoising steps");
    p.integer("-W,--width", &width, 16, 1024, "N", "width");
    p.integer("-H,--height", &height, 16, 1024, "N", "height");
    p.toggle("--text", &text, "a text answer instead of an image (UniWorld text task, X-Omni chat)");
    p.integer("--die-rank", &die_rank, -1, 1024, "R", "the rank to kill");
    p.integer("--die-step", &die_step, -1, 100, "K", "the denoising step at which it dies");
    cli::add_runtime_flags(p, &rt, true);
    cli::add_parallel_flags(p);
    if (!p.parse(argc, argv)) return cli::kExitOk;
    cli::join_ranks(rt);
    cli::apply_runtime(rt);
    const int rank = cli::current_rank();

    at::Tensor latents, lm_hidden;
    std::string tokens;
    omniflux::DebugScope taps([&](const std::string& name, const at::Tensor& t) {
      if (name == "flux.step_latents") latents = t.detach().to(at::kCPU, at::kFloat).clone();
      if (name == "qwen2_5_vl.lm_layer_output" || name == "xomni.layer_output")
        lm_hidden = t.detach().to(at::kCPU, at::kFloat).clone();
      if (name == "sampling.text_token") tokens += std::to_string(t.item<int64_t>()) + " ";
    });
    auto progress = [&](const std::string& stage, int64_t step, int64_t) {
      if (stage == "denoise" && step == die_step && rank == die_rank) std::raise(SIGKILL);
      return true;
    };
    std::optional<omniflux::Image> image;
    std::string answer, codes_text;
    if (which == "flux") {
      auto pipe = omniflux::FluxPipeline::load(model, rt);
      omniflux::FluxOptions o;
      o.prompt = prompt, o.width = width, o.height = height, o.steps = steps, o.seed = 7;
      o.negative_prompt = negative, o.true_cfg_scale = true_cfg, o.max_sequence_length = 32;
      image = pipe.generate(o, progress);
    } else if (which == "uniworld") {
      auto pipe = omniflux::UniWorldPipeline::load(model, flux, siglip, rt);
      omniflux::UniWorldOptions o;
      o.prompt = prompt, o.width = width, o.height = height, o.steps = steps, o.seed = 7, o.max_sequence_length = 32;
      for (const auto& i : images) o.images.push_back(omniflux::load_image(i));
      o.task = text ? omniflux::UniWorldTask::Text : omniflux::UniWorldTask::Image;
      o.max_new_tokens = 12;
      auto r = pipe.run(o, progress);
      if (!r) return cli::kExitCancelled;
      if (auto* im = std::get_if<omniflux::Image>(&*r)) image = *im;
      else answer = std::get<std::string>(*r);
    } else {
      auto pipe = omniflux::XOmniPipeline::load(model, text ? std::string() : flux, rt);
      if (text) {
        if (images.empty()) throw cli::UsageError("chat needs an image", "-i/--image");
        auto a = pipe.chat(omniflux::load_image(images[0]), prompt, {}, 12);
        if (!a) return cli::kExitCancelled;
        answer = *a;
      } else {
        omniflux::XOmniOptions o;
        o.prompt = prompt, o.width = width, o.height = height, o.cfg_scale = lm_cfg, o.seed = 7;
        o.decoder.steps = steps;
        o.decoder.seed = 7;
        auto c = pipe.generate_codes(o);
        if (!c) return cli::kExitCancelled;
        for (int64_t code : c->codes) codes_text += std::to_string(code) + " ";
        image = pipe.decode_codes(*c, o.decoder, progress);
      }
    }
    auto write_raw = [](const fs::path& path, const at::Tensor& t) {
      std::ofstream f(path, std::ios::binary);
      at::Tensor c = t.contiguous();
      f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * sizeof(float)));
    };
    fs::create_directories(out);
    const std::string me = std::to_string(std::max(rank, 0));  // -1: one process, no launcher
    if (text) std::ofstream(fs::path(out) / ("tokens." + me + ".txt")) << tokens;
    if (lm_hidden.defined()) write_raw(fs::path(out) / ("lm." + me + ".f32"), lm_hidden);
    if (!rt.writes_output()) return cli::kExitOk;
    if (latents.defined()) write_raw(fs::path(out) / "latents.f32", latents);
    if (image) omniflux::save_png((fs::path(out) / "image.png").string(), *image);
    if (!codes_text.empty()) std::ofstream(fs::path(out) / "codes.txt") << codes_text;
    if (!answer.empty() || text) std::ofstream(fs::path(out) / "text.txt") << answer;
    return cli::kExitOk;
  });
}
