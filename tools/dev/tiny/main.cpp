// omniflux-tiny --out DIR [--seed N] [--only NAME]... [--tokenizers DIR] [--list]
// Writes every registered tiny model folder (or the ones asked for) under DIR.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "tiny.h"

namespace fs = std::filesystem;

namespace omniflux::tiny {

std::map<std::string, TinyModel>& registry() {
  static std::map<std::string, TinyModel> r;
  return r;
}

void TinyContext::write_json(const fs::path& rel, const nlohmann::json& j) const {
  fs::path p = dir / rel;
  fs::create_directories(p.parent_path());
  std::ofstream out(p);
  if (!out) throw Error("cannot write", p.string());
  out << j.dump(2) << "\n";
}

void TinyContext::copy_tokenizer(const std::string& from, const std::string& to,
                                 const std::vector<std::string>& names) const {
  fs::create_directories(dir / to);
  for (const auto& n : names) {
    fs::path src = tokenizers / from / n;
    if (!fs::is_regular_file(src))
      throw Error("tokenizer file not found (pass --tokenizers DIR)", src.string(), "tests/fixtures/tokenizers", "missing");
    fs::copy_file(src, dir / to / n, fs::copy_options::overwrite_existing);
  }
}

}  // namespace omniflux::tiny

namespace {

// The repository's tests/fixtures/tokenizers, found from the binary (build/bin/) or the cwd.
fs::path default_tokenizers(const char* argv0) {
  if (const char* env = std::getenv("OMNIFLUX_TOKENIZERS")) return env;
  std::error_code ec;
  fs::path exe = fs::canonical("/proc/self/exe", ec);
  if (ec) exe = fs::absolute(argv0);
  for (fs::path p = exe.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path())
    if (fs::is_directory(p / "tests/fixtures/tokenizers")) return p / "tests/fixtures/tokenizers";
  return fs::current_path() / "tests/fixtures/tokenizers";
}

void usage() {
  std::fprintf(stderr, "usage: omniflux-tiny --out DIR [--seed N] [--only NAME]... [--preset tiny|medium] [--tokenizers DIR] [--list]\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace omniflux::tiny;
  fs::path out;
  TinyContext ctx;
  ctx.tokenizers = default_tokenizers(argv[0]);
  std::vector<std::string> only;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") out = value();
    else if (a == "--seed") ctx.seed = std::strtoull(value().c_str(), nullptr, 10);
    else if (a == "--only") only.push_back(value());
    else if (a == "--tokenizers") ctx.tokenizers = value();
    else if (a == "--preset") {
      ctx.preset = value();
      if (ctx.preset != "tiny" && ctx.preset != "medium") {
        std::fprintf(stderr, "omniflux-tiny: --preset: expected tiny or medium, got '%s'\n", ctx.preset.c_str());
        return 2;
      }
    }
    else if (a == "--list") list = true;
    else if (a == "-h" || a == "--help") { usage(); return 0; }
    else { usage(); return 2; }
  }
  if (list) {
    for (const auto& [name, m] : registry()) std::cout << name << " -> " << m.folder << "\n";
    return 0;
  }
  if (out.empty()) { usage(); return 2; }
  try {
    for (const auto& n : only)
      if (!registry().count(n)) throw omniflux::Error("no such tiny model", "--only " + n);
    for (const auto& [name, m] : registry()) {
      if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
      ctx.dir = out / m.folder;
      fs::create_directories(ctx.dir);
      m.write(ctx);
      std::cout << "wrote " << ctx.dir.string() << "\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-tiny: %s\n", e.what());
    return 1;
  }
  return 0;
}
