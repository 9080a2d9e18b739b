#include "io/paths.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <sys/stat.h>

#include "omniflux/error.h"

namespace fs = std::filesystem;

namespace omniflux {

namespace {
const char* kind_of(mode_t mode) {
  return S_ISREG(mode) ? "a file" : S_ISDIR(mode) ? "a folder" : S_ISFIFO(mode) ? "a FIFO" : S_ISSOCK(mode) ? "a socket"
         : (S_ISCHR(mode) || S_ISBLK(mode)) ? "a device" : "not a regular file";
}
}  // namespace

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error("cannot open " + what, path, "a readable regular file", std::strerror(errno));
  if (S_ISREG(st.st_mode)) return;
  throw Error(what + " is not a regular file", path, "a regular file", kind_of(st.st_mode));
}

void require_folder(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(what + " folder not found", path, "a folder", std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) throw Error(what + " is not a folder", path, "a folder", kind_of(st.st_mode));
}

std::string require_file(const std::string& folder, const std::string& name, const std::string& what) {
  const std::string path = (fs::path(folder) / name).string();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error("the " + what + " folder lacks " + name, path, name, std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw Error("the " + what + " folder's " + name + " is not a regular file", path, "a regular file", kind_of(st.st_mode));
  return path;
}

namespace {
bool inside(const fs::path& base, const fs::path& p) {
  auto b = base.begin(), q = p.begin();
  for (; b != base.end(); ++b, ++q) {
    if (b->empty()) continue;  // a trailing separator
    if (q == p.end() || *q != *b) return false;
  }
  return true;
}
}  // namespace

std::string resolve_in_folder(const std::string& folder, const std::string& relative, const std::string& where,
                              bool allow_outside) {
  if (relative.empty()) throw Error("empty path in config", where, "a path inside " + folder, "\"\"");
  const fs::path rel(relative);
  const fs::path joined = fs::path(folder) / rel;  // an absolute `rel` replaces the folder
  if (allow_outside) return joined.string();
  if (rel.is_absolute())
    throw Error("path leaves the model folder", where,
                "a path relative to " + folder + " (RuntimeOptions::allow_outside_paths allows others)", relative);
  std::error_code ec;
  fs::path base = fs::weakly_canonical(fs::path(folder), ec);
  if (ec) throw Error("cannot resolve the model folder", folder, "", ec.message());
  // A Hugging Face cache snapshot (models--org--name/snapshots/<rev>/) links its files into the
  // repository's blobs/: the repository folder is the boundary there.
  for (fs::path p = base; !p.empty() && p != p.root_path(); p = p.parent_path()) {
    if (p.parent_path().filename() == "snapshots" && p.parent_path().parent_path().filename().string().rfind("models--", 0) == 0) {
      base = p.parent_path().parent_path();
      break;
    }
  }
  const fs::path target = fs::weakly_canonical(joined, ec);
  if (ec) throw Error("cannot resolve a config path", where, "", ec.message());
  if (!inside(base, target))
    throw Error("path leaves the model folder", where,
                "a path inside " + base.string() + " (RuntimeOptions::allow_outside_paths allows others)",
                relative + " -> " + target.string());
  return joined.string();
}

}  // namespace omniflux
