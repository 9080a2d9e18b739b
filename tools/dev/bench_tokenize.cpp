// omniflux-bench_tokenize: tokens per second on large prompts, one JSON line per measurement.
//
//   omniflux-bench_tokenize --tokenizer PATH [--tokenizer PATH ...] [--bytes N] [--repeat R]
//                           [--input prose|one_letter|spaces|digits|special ...]
//
// Each input is generated to exactly N bytes (default 1 MiB, cut at a character boundary) and
// encoded R times (default 3) without truncation; the fastest run is reported. Run it with
// --bytes 1048576 and --bytes 4194304 to see that time grows linearly with the input.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/text/tokenizer.h"

namespace {

std::string make_input(const std::string& kind, size_t n) {
  std::string unit;
  if (kind == "prose") {
    unit =
        "A photo of a cat sitting on a windowsill, golden hour, 35mm. The quick brown fox jumps over the lazy dog; "
        "it's 3.14159 times faster!\n\nDescribe this image:\t\"naïve café\" — 我想在apple工作1314151天 🦙🚀 "
        "Привет мир, مرحبا بالعالم.   \r\n";
  } else if (kind == "one_letter") {
    unit = "a";
  } else if (kind == "spaces") {
    unit = " ";
  } else if (kind == "digits") {
    unit = "0123456789";
  } else if (kind == "special") {
    unit = "<|im_start|>user\nhi there<|im_end|>\n<extra_id_0> <|endoftext|>";
  } else {
    throw omniflux::Error("unknown input kind", "--input", "prose, one_letter, spaces, digits or special", kind);
  }
  std::string s;
  s.reserve(n + unit.size());
  while (s.size() < n) s += unit;
  size_t cut = n;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
  s.resize(cut);
  return s;
}

}  // namespace

namespace cli = omniflux::cli;

int main(int argc, char** argv) {
  return cli::run("omniflux-bench_tokenize", [&] {
    std::vector<std::string> paths, inputs;
    size_t bytes = 1 << 20;
    int repeat = 3;
    cli::Parser p("omniflux-bench_tokenize", "Tokenizer throughput on large generated prompts, one JSON line per measurement.");
    p.paths("--tokenizer", &paths, "PATH", "a tokenizer to measure").required();
    p.integer("--bytes", &bytes, 1, int64_t(1) << 32, "N", "input size in bytes");
    p.integer("--repeat", &repeat, 1, 1000, "R", "runs per input (the fastest is reported)");
    p.texts("--input", &inputs, "prose|one_letter|spaces|digits|special", "input kinds (default: all)");
    if (!p.parse(argc, argv)) return cli::kExitOk;
    for (const auto& kind : inputs)
      if (kind != "prose" && kind != "one_letter" && kind != "spaces" && kind != "digits" && kind != "special")
        throw cli::UsageError("unknown input kind", "--input", "prose, one_letter, spaces, digits or special", kind);
    if (inputs.empty()) inputs = {"prose", "one_letter", "spaces", "digits", "special"};
    for (const auto& path : paths) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto tok = omniflux::text::load_tokenizer(path);
      const double load_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      for (const auto& kind : inputs) {
        const std::string text = make_input(kind, bytes);
        double best = 1e300;
        size_t tokens = 0;
        omniflux::text::EncodeStats stats;
        for (int r = 0; r < repeat; ++r) {
          omniflux::text::EncodeStats s;
          omniflux::text::EncodeOptions opt;
          opt.stats = &s;
          const auto start = std::chrono::steady_clock::now();
          const auto ids = tok->encode(text, opt);
          const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
          if (ms < best) {
            best = ms;
            stats = s;
          }
          tokens = ids.size();
        }
        std::printf(
            "{\"bench\": \"tokenize\", \"tokenizer\": \"%s\", \"path\": \"%s\", \"input\": \"%s\", \"bytes\": %zu, "
            "\"tokens\": %zu, \"load_ms\": %.1f, \"ms\": %.2f, \"tokens_per_s\": %.0f, \"mb_per_s\": %.2f, "
            "\"pieces\": %zu, \"bpe_work\": %zu}\n",
            tok->kind().c_str(), path.c_str(), kind.c_str(), text.size(), tokens, load_ms, best,
            tokens / (best / 1e3), text.size() / (best / 1e3) / (1 << 20), stats.pieces, stats.bpe_work);
        std::fflush(stdout);
      }
    }
    return cli::kExitOk;
  });
}
