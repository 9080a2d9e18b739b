#pragma once
// Helpers shared by the tests: fixture paths, self-removing temporary folders, and running a tool
// as a child process.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "omniflux/io/image.h"

extern char** environ;

inline std::string fixture(const std::string& rel) {
  return (std::filesystem::path(OMNIFLUX_FIXTURES) / rel).string();
}

// The whole content of a file, as bytes.
inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes bytes to a file.
inline void write_bytes(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

// CRC-32 (zip's polynomial), bit by bit: independent of the library's table.
inline uint32_t zip_crc(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// A zip of stored entries with their CRC-32, written independently of the library's writer.
inline std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries, uint16_t method = 0) {
  auto put = [](std::string& s, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  };
  std::string out, cd;
  for (const auto& [name, data] : entries) {
    const size_t off = out.size();
    const uint32_t crc = zip_crc(data);
    put(out, 0x04034b50, 4); put(out, 20, 2); put(out, 0, 2); put(out, method, 2); put(out, 0, 4);
    put(out, crc, 4); put(out, data.size(), 4); put(out, data.size(), 4); put(out, name.size(), 2); put(out, 0, 2);
    out += name + data;
    put(cd, 0x02014b50, 4); put(cd, 20, 2); put(cd, 20, 2); put(cd, 0, 2); put(cd, method, 2); put(cd, 0, 4);
    put(cd, crc, 4); put(cd, data.size(), 4); put(cd, data.size(), 4); put(cd, name.size(), 2);
    put(cd, 0, 2); put(cd, 0, 2); put(cd, 0, 2); put(cd, 0, 2); put(cd, 0, 4); put(cd, off, 4);
    cd += name;
  }
  const size_t cd_off = out.size();
  out += cd;
  put(out, 0x06054b50, 4); put(out, 0, 4); put(out, entries.size(), 2); put(out, entries.size(), 2);
  put(out, cd.size(), 4); put(out, cd_off, 4); put(out, 0, 2);
  return out;
}

// A deterministic RGB test image: a diagonal colour ramp shifted by `salt`.
inline omniflux::Image gradient_image(int w, int h, int salt) {
  omniflux::Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>((x * 7 + y * 3 + c * 50 + salt) % 256);
  return im;
}

#ifdef OMNIFLUX_BIN_DIR
// Path of a built binary (build/bin/NAME), for tests that run the tools as a user would.
inline std::string bin(const std::string& name) {
  return (std::filesystem::path(OMNIFLUX_BIN_DIR) / name).string();
}
#endif

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("omniflux-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

#ifdef OMNIFLUX_BIN_DIR
// Tiny random-weight model folders written by omniflux-tiny (the repository's tokenizer files),
// once per process for each seed and model list; they live until the process ends.
inline const std::filesystem::path& tiny_folders(uint64_t seed, const std::vector<std::string>& only) {
  static std::map<std::string, std::unique_ptr<TempDir>> written;
  static std::mutex m;
  std::string key = std::to_string(seed), args;
  for (const auto& o : only) {
    key += " " + o;
    args += " --only " + o;
  }
  std::lock_guard<std::mutex> lock(m);
  auto& dir = written[key];
  if (!dir) {
    auto d = std::make_unique<TempDir>();
    const std::string cmd = bin("omniflux-tiny") + " --out " + d->path().string() + " --seed " + std::to_string(seed) +
                            args + " --tokenizers " + fixture("tokenizers") + " > /dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("omniflux-tiny failed: " + cmd);
    dir = std::move(d);
  }
  return dir->path();
}
#endif

// A tool run as a child process (argv verbatim, no shell) with stdout and stderr captured, for
// tests that must act while it runs (send Ctrl-C once it reports progress).
class Child {
 public:
  // `env`: NAME=value entries added to (or replacing those of) this process's environment.
  // `cwd`: the child's working directory (default: this process's).
  explicit Child(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                 const std::string& cwd = {}) {
    std::vector<std::string> vars;
    for (char** e = environ; *e; ++e) {
      const std::string v = *e;
      bool replaced = false;
      for (const auto& x : env) replaced = replaced || v.compare(0, x.find('=') + 1, x, 0, x.find('=') + 1) == 0;
      if (!replaced) vars.push_back(v);
    }
    vars.insert(vars.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (auto& v : vars) envp.push_back(const_cast<char*>(v.c_str()));
    envp.push_back(nullptr);
    int out[2], err[2];
    if (pipe(out) != 0 || pipe(err) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, err[0]);
    if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(err[1]);
    fds_[0] = out[0];
    fds_[1] = err[0];
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    for (int fd : fds_)
      if (fd >= 0) close(fd);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0; }
  // Reads until stderr contains `needle` or both streams end; a guard against hangs, not a timing
  // check: `limit_s` only bounds how long a broken tool can stall the test.
  bool wait_for_stderr(const std::string& needle, int limit_s = 600) {
    return wait_until([&] { return err_.find(needle) != std::string::npos; }, limit_s);
  }
  bool wait_for_stdout(const std::string& needle, int limit_s = 600) {
    return wait_until([&] { return out_.find(needle) != std::string::npos; }, limit_s);
  }
  template <typename Pred>
  bool wait_until(Pred done, int limit_s) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
    while (!done())
      if (!pump(end)) return done();
    return true;
  }
  void signal(int sig) {
    if (pid_ > 0 && !reaped_) kill(pid_, sig);
  }
  // Drains both streams and returns the raw wait status.
  int wait() {
    while (pump(std::chrono::steady_clock::now() + std::chrono::hours(1))) {
    }
    int st = -1;
    if (pid_ > 0 && !reaped_) waitpid(pid_, &st, 0);
    reaped_ = true;
    return st;
  }
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  // One poll round; false when both streams have ended or the deadline passed.
  bool pump(std::chrono::steady_clock::time_point end) {
    pollfd p[2] = {{fds_[0], POLLIN, 0}, {fds_[1], POLLIN, 0}};
    if (fds_[0] < 0 && fds_[1] < 0) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (poll(p, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000))) < 0) return false;
    for (int k = 0; k < 2; ++k) {
      if (fds_[k] < 0 || !(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = read(fds_[k], buf, sizeof buf);
      if (n > 0) {
        (k == 0 ? out_ : err_).append(buf, static_cast<size_t>(n));
      } else {
        close(fds_[k]);
        fds_[k] = -1;
      }
    }
    return true;
  }
  pid_t pid_ = -1;
  bool reaped_ = false;
  int fds_[2] = {-1, -1};
  std::string out_, err_;
};
