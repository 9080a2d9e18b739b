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

  // Range-checked reads: every size, count, epsilon, theta, index read from a config goes through
  // these, so a zero patch size or a negative epsilon is an Error naming the file and the field
  // before any work. Integer bounds are inclusive; numbers must be finite and within [lo, hi].
  static constexpr int64_t kMaxSize = int64_t(1) << 24;  // bound for sizes, counts and ids
  int64_t get_int(const std::string& key, int64_t def, int64_t lo, int64_t hi) const;
  int64_t get_int_in(const std::string& key, int64_t lo, int64_t hi) const;  // required
  // A size or count: `def` when absent, else in [lo, kMaxSize].
  int64_t get_size(const std::string& key, int64_t def, int64_t lo = 1) const;
  int64_t get_size(const std::string& key) const;  // required, in [1, kMaxSize]
  double get_double(const std::string& key, double def, double lo, double hi) const;
  double get_double_in(const std::string& key, double lo, double hi) const;  // required
  // Finite and > 0 (theta, scales), at most `hi`.
  double get_positive(const std::string& key, double def, double hi = 1e300) const;
  // A norm epsilon: finite, in (0, 1].
  double get_epsilon(const std::string& key, double def) const;
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& def, int64_t lo,
                                    int64_t hi) const;
  std::vector<double> get_double_list(const std::string& key, const std::vector<double>& def, double lo,
                                      double hi) const;
  // A consistency rule between fields: unless `ok`, throws Error("inconsistent config", where(field),
  // expected, got).
  void check(bool ok, const std::string& field, const std::string& expected, const std::string& got) const;
  // "file: dotted.path.key", for messages.
  std::string where(const std::string& key) const;

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
