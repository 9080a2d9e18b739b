#include "io/file_write.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "omniflux/error.h"

namespace fs = std::filesystem;

namespace omniflux {

namespace {

// Writes everything, retrying after signals (a Ctrl-C handler interrupts write()).
int write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw Error(what, path, "a writable path", std::strerror(err));
}

}  // namespace

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  if (path.empty()) throw Error("empty output path", "write_file_atomic");
  const char* bytes = static_cast<const char*>(data);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode)) throw Error("output path is a folder", path, "a file name", "a folder");
    // A device or FIFO: write in place, checking every step (/dev/full must fail). Non-blocking
    // open: a FIFO nobody reads is an error (ENXIO), not a hang; then blocking writes again.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail(errno == ENXIO ? "nothing reads the output FIFO" : "cannot open output", path, errno);
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    int err = write_all(fd, bytes, size);
    if (::close(fd) != 0 && err == 0 && errno != EINTR) err = errno;
    if (err != 0) fail("cannot write output", path, err);
    return;
  }
  // Replace the link's target, not the link.
  fs::path target = path;
  std::error_code ec;
  if (fs::is_symlink(target, ec)) {
    const fs::path resolved = fs::weakly_canonical(target, ec);
    if (!ec) target = resolved;
  }
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  static std::atomic<unsigned> counter{0};
  const auto salt = static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
  int fd = -1;
  fs::path tmp;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = dir / ("." + target.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter++) + "-" + std::to_string((salt + attempt * 7919) % 1000000));
    // 0666 before the umask, as for any new file.
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) fail("cannot create output", path, errno);
  }
  if (fd < 0) fail("cannot create output", path, EEXIST);
  int err = write_all(fd, bytes, size);
  // fsync before rename: otherwise a crash can leave the new name with no data. Some file systems
  // do not support it (EINVAL); that is not a write failure.
  if (err == 0 && ::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) err = errno;
  if (::close(fd) != 0 && err == 0 && errno != EINTR) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), target.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    fail("cannot write output", path, err);
  }
}

}  // namespace omniflux
