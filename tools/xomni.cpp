// omniflux-xomni: X-Omni text-to-image and image chat from the command line (--help lists the
// flags of each command).
//   omniflux-xomni generate --model DIR --flux DIR -p PROMPT [...] [--codes-out codes.json] [-o out.png]
//   omniflux-xomni decode --model DIR --flux DIR --codes codes.json [--seed S] [-o out.png]
//   omniflux-xomni chat --model DIR -i IMAGE -p QUESTION [--max-new-tokens N]
// generate shows a token progress bar (tokens/s, ETA) on stderr; chat streams the answer to stdout.
// Ctrl-C stops within one token or one denoising step (exit status 130).
// codes.json: {"prompt": ..., "rows": h, "cols": w, "codes": [h*w ints]}.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "png_parameters.h"
#include "omniflux/error.h"
#include "io/file_write.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/xomni.h"

namespace {

using omniflux::Error;
namespace cli = omniflux::cli;

constexpr int64_t kMaxGridSide = omniflux::kFluxMaxSide / 16;  // codes per side of a 4096 px image

void write_codes(const std::string& path, const omniflux::XOmniCodes& c) {
  nlohmann::json j = {{"prompt", c.prompt}, {"rows", c.rows}, {"cols", c.cols}, {"codes", c.codes}};
  omniflux::write_file_atomic(path, j.dump() + "\n");
}

std::string read_text_file(const std::string& flag, const std::string& path) {
  cli::check_input_file(flag, path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A codes file's text (written by generate --codes-out) -> codes; `path` names it in errors.
omniflux::XOmniCodes parse_codes(const std::string& text, const std::string& path) {
  omniflux::XOmniCodes c;
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    c.prompt = j.at("prompt").get<std::string>();
    c.rows = j.at("rows").get<int64_t>();
    c.cols = j.at("cols").get<int64_t>();
    c.codes = j.at("codes").get<std::vector<int64_t>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("not a codes file", path, "{prompt, rows, cols, codes}", e.what());
  }
  // Bounded before multiplying: rows * cols cannot overflow.
  for (auto [name, v] : {std::pair<const char*, int64_t>{"rows", c.rows}, {"cols", c.cols}})
    if (v < 1 || v > kMaxGridSide)
      throw Error("code grid out of range", path + ": " + name, "1.." + std::to_string(kMaxGridSide), std::to_string(v));
  if (static_cast<int64_t>(c.codes.size()) != c.rows * c.cols)
    throw Error("the number of codes must be rows * cols", path + ": codes",
                std::to_string(c.rows) + " * " + std::to_string(c.cols), std::to_string(c.codes.size()));
  return c;
}

// "\r[#####.....] 1234/5184 codes  812.3 tok/s  ETA 4.9 s"
struct TokenBar {
  const char* unit;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  int64_t last_percent = -1;
  void operator()(int64_t done, int64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t pct = total ? done * 1000 / total : 1000;
    if (pct == last_percent && done != total) return;  // redraw at most every 0.1%
    last_percent = pct;
    const double rate = s > 0 ? done / s : 0.0;
    const double eta = rate > 0 ? (total - done) / rate : 0.0;
    const int width = 30, fill = static_cast<int>(width * done / std::max<int64_t>(1, total));
    std::string bar(fill, '#');
    bar.append(width - fill, '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld %s  %.1f tok/s  ETA %.1f s   ", bar.c_str(), (long long)done,
                 (long long)total, unit, rate, eta);
    if (done == total) std::fprintf(stderr, "\n");
  }
};

// out.png -> out.codes.json, beside it: where generate saves the codes when decoding fails.
std::string rescue_codes_path(const std::string& out) {
  std::filesystem::path p(out);
  return (p.parent_path() / (p.stem().string() + ".codes.json")).string();
}

}  // namespace

int main(int argc, char** argv) {
  cli::install_cancel_handler();
  return cli::run("omniflux-xomni", [&] {
    std::string model, flux, out = "out.png", codes_out, codes_in, image_path;
    bool quiet = false, codes_only = false, dry_run = false, parse_special = false;
    int64_t max_new = 512;
    omniflux::XOmniOptions opt;
    omniflux::RuntimeOptions rt;
    const std::vector<std::string> gen = {"generate"}, draw = {"generate", "decode"}, chat = {"chat"};
    cli::Parser p("omniflux-xomni", "X-Omni: text-to-image through image codes, and chat about an image.");
    p.command("generate", "Prompt -> image codes (autoregressive) -> FLUX decoder -> PNG.");
    p.command("decode", "Image codes from a codes file (generate --codes-out) -> PNG.");
    p.command("chat", "Answer a question about an image, streamed to stdout.");
    p.path("-m,--model", &model, "DIR", "the X-Omni folder").required();
    p.path("--flux", &flux, "DIR", "the FLUX.1-dev folder (needed to decode)").commands(draw);
    p.text("-p,--prompt", &opt.prompt, "TEXT", "the prompt (generate) or the question (chat)")
        .commands({"generate", "chat"})
        .required();
    p.integer("-W,--width", &opt.width, 16, omniflux::kFluxMaxSide, "N", "output width, a multiple of 16").commands(gen);
    p.integer("-H,--height", &opt.height, 16, omniflux::kFluxMaxSide, "N", "output height, a multiple of 16").commands(gen);
    p.number("--cfg", &opt.cfg_scale, 0, 100, "G", "LM classifier-free guidance (1 = off)").commands(gen);
    p.number("--temperature", &opt.sampling.temperature, 0, 100, "T", "sampling temperature", /*lo_open=*/true)
        .commands(gen);
    p.integer("--top-k", &opt.sampling.top_k, 0, 1 << 30, "K", "top-k sampling, 0 = off").commands(gen);
    p.number("--top-p", &opt.sampling.top_p, 0, 1, "P", "nucleus sampling, 1 = off").commands(gen);
    p.number("--min-p", &opt.sampling.min_p, 0, 1, "M", "min-p sampling, 0 = off").commands(gen);
    p.seed("--seed", &opt.seed, "token sampling and decoder noise seed").commands(draw);
    p.integer("--decoder-steps", &opt.decoder.steps, 1, 1000, "N", "decoder denoising steps (default: the model's)")
        .commands(draw);
    p.number("--decoder-cfg", &opt.decoder.cfg_scale, 0, 100, "S", "decoder text guidance (default: the model's)")
        .commands(draw);
    p.number("--decoder-cfg-2", &opt.decoder.cfg_scale_2, 0, 100, "S",
             "decoder image-feature guidance (default: the model's)")
        .commands(draw);
    p.path("--codes-out", &codes_out, "FILE", "also write the image codes as JSON").commands(gen);
    p.toggle("--codes-only", &codes_only, "stop after the codes (no --flux, no PNG)").commands(gen);
    p.path("--codes", &codes_in, "FILE", "the codes file to decode").commands({"decode"}).required();
    p.path("-o,--output", &out, "FILE", "the PNG to write").commands(draw);
    p.path("-i,--image", &image_path, "IMAGE", "the image to ask about").commands(chat).required();
    p.integer("--max-new-tokens", &max_new, 1, 32768, "N", "length limit of the answer").commands(chat);
    p.toggle("--quiet", &quiet, "no progress on stderr");
    p.toggle("--parse-special-tokens", &parse_special,
             "read special-token text in the prompt (<|im_start|>, <|image_pad|>, ...) as those tokens, as Hugging Face does; default: as plain text")
        .commands({"generate", "chat"});
    p.toggle("--dry-run", &dry_run, "print the memory plan of this request per offload mode and exit (reads no weights)")
        .commands(gen);
    cli::add_runtime_flags(p, &rt);
    cli::add_parallel_flags(p);
    if (!p.parse(argc, argv)) return cli::kExitOk;
    const std::string cmd = p.chosen_command();
    opt.decoder.seed = opt.seed;

    // Everything that can be checked before loading or sampling.
    const bool need_decoder = cmd == "decode" || (cmd == "generate" && !codes_only);
    if (cmd == "generate") {
      try {
        omniflux::xomni_check_size(opt.width, opt.height);
      } catch (const Error& e) {
        throw cli::UsageError(e.what_part(), opt.width % 16 ? "-W/--width" : "-H/--height", e.expected(), e.got());
      }
      if (codes_only && p.given("-o")) throw cli::UsageError("--codes-only writes no PNG", "-o/--output", "no -o", out);
      if (codes_only && p.given("--flux")) throw cli::UsageError("--codes-only needs no decoder", "--flux", "no --flux", flux);
      if (codes_only && codes_out.empty())
        throw cli::UsageError("--codes-only needs somewhere to write the codes", "--codes-out", "--codes-out FILE", "nothing");
      if (!codes_only && flux.empty()) throw cli::UsageError("missing --flux (or --codes-only)", "omniflux-xomni generate");
      if (!codes_out.empty()) cli::check_output_file("--codes-out", codes_out);
      if (!codes_only && codes_out.empty()) cli::check_output_file("-o/--output", rescue_codes_path(out));
    }
    if (cmd == "decode" && flux.empty()) throw cli::UsageError("missing --flux", "omniflux-xomni decode");
    if (need_decoder) {
      cli::check_output_file("-o/--output", out);
      cli::check_input_folder("--flux", flux);
    }
    omniflux::XOmniCodes codes;
    omniflux::Image chat_image;
    // Under several ranks rank 0 reads the inputs and shares them after join_ranks.
    std::string codes_text;
    if (cmd == "decode" && cli::reads_inputs()) codes = parse_codes(codes_text = read_text_file("--codes", codes_in), codes_in);
    if (cmd == "chat" && cli::reads_inputs()) {
      cli::check_input_file("-i/--image", image_path);
      chat_image = omniflux::load_image(image_path);
    }
    cli::check_input_folder("-m/--model", model);
    if (!dry_run) cli::join_ranks(rt);
    if (cmd == "decode" && rt.parallel) {
      cli::share_text(codes_text, rt);
      codes = parse_codes(codes_text, codes_in);
    }
    if (cmd == "chat" && rt.parallel) {
      std::vector<omniflux::Image> shared{chat_image};
      cli::share_images(shared, rt);
      chat_image = shared.at(0);
    }
    if (!dry_run) cli::apply_runtime(rt);  // a dry run plans for devices this machine need not have
    quiet = quiet || !rt.writes_output();  // rank 0 reports progress and writes
    if (dry_run) {
      if (flux.empty()) throw cli::UsageError("--dry-run plans the whole request and needs --flux", "--dry-run");
      omniflux::plan::XOmniRequest req;
      req.width = opt.width;
      req.height = opt.height;
      req.cfg = opt.cfg_scale != 1.0;
      req.prompt = opt.prompt;
      omniflux::plan::DryRunOptions dro;  // one rank's plan with --nproc N
      dro.rt.parallel = rt.parallel = cli::simulated_ranks();
      return cli::print_dry_run(omniflux::plan::plan_xomni(model, flux, req, dro), rt);
    }

    auto t0 = std::chrono::steady_clock::now();
    auto pipe = omniflux::XOmniPipeline::load(model, need_decoder ? flux : std::string(), rt);
    if (parse_special) pipe.set_prompt_special_tokens(omniflux::text::PromptSpecialTokens::Parse);
    if (!quiet) std::fprintf(stderr, "loaded %s\n", model.c_str());
    if (!cli::keep_going(rt)) return cli::kExitCancelled;

    if (cmd == "chat") {
      auto answer = pipe.chat(
          chat_image, opt.prompt,
          [&](const std::string& piece) {
            if (!rt.writes_output()) return true;
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
          },
          max_new, [&](const std::string&, int64_t, int64_t) { return cli::keep_going(rt); });
      if (rt.writes_output()) std::fputc('\n', stdout);
      return answer ? cli::kExitOk : cli::kExitCancelled;
    }

    if (cmd == "generate") {
      TokenBar bar{"codes"};
      auto made = pipe.generate_codes(opt, [&](const std::string&, int64_t done, int64_t total) {
        if (!quiet) bar(done, total);
        return cli::keep_going(rt);
      });
      if (!made) {
        if (!quiet) std::fprintf(stderr, "\n");
        return cli::kExitCancelled;
      }
      codes = std::move(*made);
      if (!codes_out.empty() && rt.writes_output()) {
        write_codes(codes_out, codes);
        if (!quiet) std::fprintf(stderr, "wrote %s (%lld codes)\n", codes_out.c_str(), (long long)codes.codes.size());
      }
      if (codes_only) return cli::kExitOk;
    }
    auto progress = [&](const std::string& stage, int64_t step, int64_t total) {
      if (!quiet) std::fprintf(stderr, "\r%s %lld/%lld   ", stage.c_str(), (long long)step, (long long)total);
      return cli::keep_going(rt);
    };
    std::optional<omniflux::Image> image;
    try {
      image = pipe.decode_codes(codes, opt.decoder, progress);
      if (!quiet) std::fprintf(stderr, "\n");
      if (image && rt.writes_output()) omniflux::save_png(out, *image, {{"parameters", cli::xomni_parameters(codes, opt, pipe, cmd == "generate",
                                                                           "X-Omni (" + model + ")", "omniflux")}});
    } catch (const std::exception& e) {
      // The codes took the whole autoregressive phase: keep them for `decode` before failing.
      if (cmd == "generate" && codes_out.empty() && rt.writes_output()) {
        const std::string rescue = rescue_codes_path(out);
        write_codes(rescue, codes);
        std::fprintf(stderr, "omniflux-xomni: decoding failed; the codes are saved in %s (omniflux-xomni decode --codes %s)\n",
                     rescue.c_str(), rescue.c_str());
      }
      throw;
    }
    if (!image) return cli::kExitCancelled;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) std::fprintf(stderr, "wrote %s (%dx%d) in %.1f s\n", out.c_str(), image->width, image->height, s);
    return cli::kExitOk;
  });
}
