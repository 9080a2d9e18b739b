#pragma once
// Helpers shared by the tests: fixture paths and self-removing temporary folders.
#include <filesystem>
#include <random>
#include <string>

inline std::string fixture(const std::string& rel) {
  return (std::filesystem::path(OMNIFLUX_FIXTURES) / rel).string();
}

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
