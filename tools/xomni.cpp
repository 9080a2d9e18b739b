// omniflux-xomni: X-Omni text-to-image and image chat from the command line.
//   omniflux-xomni generate --model DIR --flux DIR -p PROMPT [-W 1152] [-H 1152] [--cfg 1.0]
//                  [--temperature T] [--top-k K] [--top-p P] [--min-p M] [--seed 1234]
//                  [--decoder-steps N] [--decoder-cfg S] [--decoder-cfg-2 S] [--codes-out codes.json]
//                  [--codes-only] [-o out.png]
//   omniflux-xomni decode --model DIR --flux DIR --codes codes.json [--seed 1234] [-o out.png]
//   omniflux-xomni chat --model DIR -i IMAGE -p QUESTION [--max-new-tokens 512]
// Common: [--device cpu|cuda] [--dtype auto|float32|bfloat16] [--threads N] [--quiet]
// generate shows a token progress bar (tokens/s, ETA) on stderr; chat streams the answer to stdout.
// codes.json: {"prompt": ..., "rows": h, "cols": w, "codes": [h*w ints]}.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/xomni.h"

namespace {

using omniflux::Error;
namespace xo = omniflux::xomni;

void usage() {
  std::fprintf(stderr,
               "usage: omniflux-xomni generate --model DIR --flux DIR -p PROMPT [-W W] [-H H] [--cfg G]\n"
               "                      [--temperature T] [--top-k K] [--top-p P] [--min-p M] [--seed S]\n"
               "                      [--decoder-steps N] [--decoder-cfg S] [--decoder-cfg-2 S]\n"
               "                      [--codes-out codes.json] [--codes-only] [-o out.png]\n"
               "       omniflux-xomni decode --model DIR --flux DIR --codes codes.json [--seed S] [-o out.png]\n"
               "       omniflux-xomni chat --model DIR -i IMAGE -p QUESTION [--max-new-tokens N]\n"
               "       common: [--device D] [--dtype T] [--threads N] [--quiet]\n");
}


void write_codes(const std::string& path, const xo::ImageCodes& c) {
  nlohmann::json j = {{"prompt", c.prompt}, {"rows", c.rows}, {"cols", c.cols}, {"codes", c.codes}};
  std::ofstream out(path);
  if (!out) throw Error("cannot write", path);
  out << j.dump() << "\n";
}

xo::ImageCodes read_codes(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read", path);
  xo::ImageCodes c;
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    c.prompt = j.at("prompt").get<std::string>();
    c.rows = j.at("rows").get<int64_t>();
    c.cols = j.at("cols").get<int64_t>();
    c.codes = j.at("codes").get<std::vector<int64_t>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("not a codes file", path, "{prompt, rows, cols, codes}", e.what());
  }
  return c;
}

// "\r[#####.....] 1234/5184 codes  812.3 tok/s  ETA 4.9 s"
struct TokenBar {
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
    std::fprintf(stderr, "\r[%s] %lld/%lld codes  %.1f tok/s  ETA %.1f s   ", bar.c_str(), (long long)done,
                 (long long)total, rate, eta);
    if (done == total) std::fprintf(stderr, "\n");
  }
};

std::string params_text(const xo::ImageCodes& c, const xo::GenerateOptions& o, const xo::XOmniPipeline& p,
                        bool with_lm, const std::string& model) {
  std::ostringstream s;
  s << c.prompt << "\n";
  if (with_lm) {
    auto sm = p.effective_sampling(o);
    s << "LM: cfg " << o.cfg_scale << ", temperature " << sm.temperature << ", top_k " << sm.top_k << ", top_p "
      << sm.top_p << ", min_p " << sm.min_p << ", seed " << o.seed << "; ";
  }
  const auto& d = p.vision_config().decoder;
  s << "Decoder: steps " << o.decoder.steps.value_or(d.num_inference_steps) << ", cfg "
    << o.decoder.cfg_scale.value_or(d.cfg_scale) << ", cfg_2 " << o.decoder.cfg_scale_2.value_or(d.cfg_scale_2)
    << ", seed " << o.decoder.seed << ", Grid: " << c.rows << "x" << c.cols << ", Model: X-Omni (" << model
    << "), Software: omniflux";
  return s.str();
}

}  // namespace

using omniflux::cli::to_double;
using omniflux::cli::g_interrupted;
using omniflux::cli::on_sigint;
using omniflux::cli::to_int;

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help") {
    usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  std::string model, flux, out = "out.png", codes_out, codes_in, image_path, question;
  bool quiet = false, codes_only = false, have_prompt = false;
  int64_t max_new = 512;
  xo::GenerateOptions opt;
  omniflux::RuntimeOptions rt;
  try {
    if (cmd != "generate" && cmd != "chat" && cmd != "decode") throw Error("unknown command", cmd, "generate, decode or chat", cmd);
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw Error("missing value", a);
        return argv[++i];
      };
      if (a == "-m" || a == "--model") model = value();
      else if (a == "--flux") flux = value();
      else if (a == "-p" || a == "--prompt") { opt.prompt = value(); have_prompt = true; }
      else if (a == "-W" || a == "--width") opt.width = to_int(a, value());
      else if (a == "-H" || a == "--height") opt.height = to_int(a, value());
      else if (a == "--cfg") opt.cfg_scale = to_double(a, value());
      else if (a == "--temperature") opt.sampling.temperature = to_double(a, value());
      else if (a == "--top-k") opt.sampling.top_k = to_int(a, value());
      else if (a == "--top-p") opt.sampling.top_p = to_double(a, value());
      else if (a == "--min-p") opt.sampling.min_p = to_double(a, value());
      else if (a == "--seed") opt.decoder.seed = opt.seed = static_cast<uint64_t>(to_int(a, value()));
      else if (a == "--decoder-steps") opt.decoder.steps = to_int(a, value());
      else if (a == "--decoder-cfg") opt.decoder.cfg_scale = to_double(a, value());
      else if (a == "--decoder-cfg-2") opt.decoder.cfg_scale_2 = to_double(a, value());
      else if (a == "--codes-out") codes_out = value();
      else if (a == "--codes") codes_in = value();
      else if (a == "--codes-only") codes_only = true;
      else if (a == "-i" || a == "--image") image_path = value();
      else if (a == "--max-new-tokens") max_new = to_int(a, value());
      else if (a == "-o" || a == "--output") out = value();
      else if (a == "--device") rt.device = value();
      else if (a == "--dtype") rt.dtype = value();
      else if (a == "--threads") rt.num_threads = static_cast<int>(to_int(a, value()));
      else if (a == "--offload") rt.offload = omniflux::parse_offload(value());
      else if (a == "--max-vram") rt.max_vram_gb = to_double(a, value());
      else if (a == "--quiet") quiet = true;
      else if (a == "-h" || a == "--help") { usage(); return 0; }
      else throw Error("unknown argument", a);
    }
    if (model.empty()) throw Error("missing --model", cmd);
    if (cmd == "generate") {
      if (!have_prompt) throw Error("missing -p PROMPT", cmd);
      if (flux.empty() && !codes_only) throw Error("missing --flux DIR (or --codes-only)", cmd);
      xo::check_image_size(opt.width, opt.height);  // fail before loading anything
    } else if (cmd == "decode") {
      if (flux.empty() || codes_in.empty()) throw Error("decode needs --flux DIR and --codes FILE", cmd);
    } else {
      if (!have_prompt || image_path.empty()) throw Error("chat needs -i IMAGE and -p QUESTION", cmd);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-xomni: %s\n", e.what());
    usage();
    return 2;
  }

  try {
    omniflux::set_num_threads(rt.num_threads);
    auto t0 = std::chrono::steady_clock::now();
    const bool need_decoder = cmd == "decode" || (cmd == "generate" && !codes_only);
    auto pipe = xo::XOmniPipeline::load(model, need_decoder ? flux : std::string(), rt);
    if (!quiet) std::fprintf(stderr, "loaded %s\n", model.c_str());

    if (cmd == "chat") {
      omniflux::Image img = omniflux::load_image(image_path);
      pipe.chat(img, opt.prompt, [](const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }, max_new);
      std::fputc('\n', stdout);
      return 0;
    }

    std::signal(SIGINT, on_sigint);
    xo::ImageCodes codes;
    if (cmd == "decode") {
      codes = read_codes(codes_in);
    } else {
      TokenBar bar;
      codes = pipe.generate_codes(opt, quiet ? xo::TokenProgress() : xo::TokenProgress(std::ref(bar)));
      if (!codes_out.empty()) {
        write_codes(codes_out, codes);
        if (!quiet) std::fprintf(stderr, "wrote %s (%lld codes)\n", codes_out.c_str(), (long long)codes.codes.size());
      }
      if (codes_only) return 0;
    }
    auto progress = [&](const std::string& stage, int64_t step, int64_t total) {
      if (!quiet) std::fprintf(stderr, "\r%s %lld/%lld   ", stage.c_str(), (long long)step, (long long)total);
      return !g_interrupted.load();
    };
    auto image = pipe.decode_codes(codes, opt.decoder, progress);
    if (!quiet) std::fprintf(stderr, "\n");
    if (!image) {
      std::fprintf(stderr, "omniflux-xomni: cancelled\n");
      return 130;
    }
    omniflux::save_png(out, *image, {{"parameters", params_text(codes, opt, pipe, cmd == "generate", model)}});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) std::fprintf(stderr, "wrote %s (%dx%d) in %.1f s\n", out.c_str(), image->width, image->height, s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-xomni: %s\n", e.what());
    return 1;
  }
  return 0;
}
