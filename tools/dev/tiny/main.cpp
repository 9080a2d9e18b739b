// omniflux-tiny --out DIR [--seed N] [--only NAME]... [--tokenizers DIR] [--list]
// Writes every registered tiny model folder (or the ones asked for) under DIR; a folder appears
// whole or not at all.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "cli.h"
#include "omniflux/error.h"
#include "io/file_write.h"
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
  write_file_atomic(p.string(), j.dump(2) + "\n");
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

// dir/<base><pid>-<k> for the first k that does not exist yet.
fs::path fresh_path(const fs::path& dir, const std::string& base) {
  for (unsigned k = 0;; ++k) {
    fs::path p = dir / (base + std::to_string(::getpid()) + "-" + std::to_string(k));
    if (!fs::exists(fs::symlink_status(p))) return p;
  }
}

// Removes a staging folder on every way out, unless released.
struct StagingFolder {
  fs::path path;
  ~StagingFolder() {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace omniflux::tiny;
  namespace cli = omniflux::cli;
  return cli::run("omniflux-tiny", [&] {
    std::string out_arg, tokenizers;
    TinyContext ctx;
    std::vector<std::string> only;
    bool list = false;
    cli::Parser p("omniflux-tiny",
                  "Writes tiny random-weight model folders in the official layouts under DIR (all registered\n"
                  "models, or the --only ones). Each folder appears whole or not at all: it is written under a\n"
                  "temporary name and renamed into place.");
    p.path("--out", &out_arg, "DIR", "where the model folders go (created if missing)");
    p.seed("--seed", &ctx.seed, "weight seed");
    p.texts("--only", &only, "NAME", "write only this model (see --list)");
    p.choice("--preset", &ctx.preset, {"tiny", "medium"}, "sizes: tiny (the tests) or medium (about 1 GB per pipeline, for memory benchmarks)");
    p.path("--tokenizers", &tokenizers, "DIR", "the real tokenizer files (default: the repository's tests/fixtures/tokenizers)");
    p.toggle("--list", &list, "list the models and their folder names");
    if (!p.parse(argc, argv)) return cli::kExitOk;
    ctx.tokenizers = tokenizers.empty() ? default_tokenizers(argv[0]) : fs::path(tokenizers);
    if (list) {
      for (const auto& [name, m] : registry()) std::cout << name << " -> " << m.folder << "\n";
      return cli::kExitOk;
    }
    if (out_arg.empty()) throw cli::UsageError("missing --out", "omniflux-tiny");
    for (const auto& n : only)
      if (!registry().count(n)) throw cli::UsageError("no such tiny model", "--only", "a name of --list", n);
    const fs::path out = fs::absolute(out_arg).lexically_normal();
    if (fs::exists(out) && !fs::is_directory(out)) throw omniflux::Error("--out is not a folder", out.string());
    fs::create_directories(out.parent_path());
    // Where the new folders are created must be writable.
    cli::check_output_file("--out", fs::is_directory(out) ? (out / "x").string() : out.string());

    // Every model is written into a staging folder first; only complete folders are moved into place.
    const bool out_existed = fs::is_directory(out);
    StagingFolder stage{out_existed ? fresh_path(out, ".tiny-partial-")
                                    : fresh_path(out.parent_path(), "." + out.filename().string() + ".partial-")};
    fs::create_directories(stage.path);
    std::vector<std::string> folders;
    for (const auto& [name, m] : registry()) {
      if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
      ctx.dir = stage.path / m.folder;
      fs::create_directories(ctx.dir);
      m.write(ctx);
      folders.push_back(m.folder);
    }
    if (!out_existed) {
      fs::rename(stage.path, out);
      stage.path.clear();
    } else {
      for (const auto& f : folders) {
        // Replace an older copy: move it aside, move the new one in, then delete the old one.
        StagingFolder old;
        if (fs::exists(fs::symlink_status(out / f))) {
          old.path = fresh_path(out, "." + f + ".old-");
          fs::rename(out / f, old.path);
        }
        fs::rename(stage.path / f, out / f);
      }
    }
    for (const auto& f : folders) std::cout << "wrote " << (out / f).string() << "\n";
    return cli::kExitOk;
  });
}
