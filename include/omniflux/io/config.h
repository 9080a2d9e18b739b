#pragma once
// Typed access to a Hugging Face config.json (or any JSON config). Errors name the field and file.
// A key whose value is null counts as absent, as in transformers' configs.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace omniflux {

class Config {
 public:
  // `path` is a JSON file, or a folder holding config.json.
  static Config load(const std::string& path);
  static Config parse(const std::string& text, const std::string& source);

  bool has(const std::string& key) const;  // present and not null
  Config sub(const std::string& key) const;  // a nested object

  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_double(const std::string& key) const;
  double get_double(const std::string& key, double def) const;
  bool get_bool(const std::string& key) const;
  bool get_bool(const std::string& key, bool def) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& def) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& def) const;
  std::vector<double> get_double_list(const std::string& key) const;
  std::vector<std::string> get_string_list(const std::string& key) const;

  std::vector<std::string> keys() const;
  const std::string& source() const { return source_; }  // the file name, for messages
  std::string path() const { return path_; }              // dotted path of this object
  std::string dump(int indent = -1) const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;  // the parsed document, shared by sub-configs
  const void* node_ = nullptr;       // this object inside it
  std::string source_, path_;
};

}  // namespace omniflux
