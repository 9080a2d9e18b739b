#pragma once
// Helpers shared by the tests: fixture paths and self-removing temporary folders.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

inline std::string fixture(const std::string& rel) {
  return (std::filesystem::path(OMNIFLUX_FIXTURES) / rel).string();
}

// The whole content of a file, as bytes.
inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
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
