#include "omniflux/io/config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "io/paths.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace omniflux {

struct Config::Impl {
  json doc;
};

namespace {
const json& node(const void* p) { return *static_cast<const json*>(p); }

std::string kind_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean " + v.dump();
  if (v.is_number_integer()) return "integer " + v.dump();
  if (v.is_number()) return "number " + v.dump();
  if (v.is_string()) return "string " + v.dump();
  if (v.is_array()) return "array";
  return "object";
}
}  // namespace

Config Config::parse(const std::string& text, const std::string& source) {
  auto impl = std::make_shared<Impl>();
  try {
    impl->doc = json::parse(text);
  } catch (const json::exception& e) {
    throw Error("config is not valid JSON", source, "", e.what());
  }
  if (!impl->doc.is_object()) throw Error("config is not a JSON object", source);
  Config c;
  c.node_ = &impl->doc;
  c.impl_ = std::move(impl);
  c.source_ = source;
  return c;
}

Config Config::load(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) file = (fs::path(path) / "config.json").string();
  require_regular_file(file, "config file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("cannot open config", file, "a readable JSON file", std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse(text, file);
}

static std::string join_path(const std::string& base, const std::string& key) {
  return base.empty() ? key : base + "." + key;
}

bool Config::has(const std::string& key) const {
  const json& n = node(node_);
  auto it = n.find(key);
  return it != n.end() && !it->is_null();
}

// The value of a present key, or an Error naming it.
static const json& require(const json& n, const std::string& key, const std::string& source,
                           const std::string& path, const char* expected) {
  auto it = n.find(key);
  if (it == n.end() || it->is_null())
    throw Error("missing config field", source + ": " + join_path(path, key), expected,
                it == n.end() ? "absent" : "null");
  return *it;
}

Config Config::sub(const std::string& key) const {
  const json& v = require(node(node_), key, source_, path_, "an object");
  if (!v.is_object())
    throw Error("config field is not an object", source_ + ": " + join_path(path_, key), "an object",
                kind_of(v));
  Config c;
  c.impl_ = impl_;
  c.node_ = &v;
  c.source_ = source_;
  c.path_ = join_path(path_, key);
  return c;
}

static int64_t as_int(const json& v, const std::string& where) {
  if (v.is_number_integer()) return v.get<int64_t>();
  // Some configs write integral values as floats (e.g. 1e6); accept those exactly.
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  throw Error("config field is not an integer", where, "an integer", kind_of(v));
}

static double as_double(const json& v, const std::string& where) {
  if (v.is_number()) return v.get<double>();
  throw Error("config field is not a number", where, "a number", kind_of(v));
}

int64_t Config::get_int(const std::string& key) const {
  return as_int(require(node(node_), key, source_, path_, "an integer"), source_ + ": " + join_path(path_, key));
}
int64_t Config::get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }

double Config::get_double(const std::string& key) const {
  return as_double(require(node(node_), key, source_, path_, "a number"), source_ + ": " + join_path(path_, key));
}
double Config::get_double(const std::string& key, double def) const { return has(key) ? get_double(key) : def; }

bool Config::get_bool(const std::string& key) const {
  const json& v = require(node(node_), key, source_, path_, "a boolean");
  if (!v.is_boolean())
    throw Error("config field is not a boolean", source_ + ": " + join_path(path_, key), "true or false",
                kind_of(v));
  return v.get<bool>();
}
bool Config::get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }

std::string Config::get_string(const std::string& key) const {
  const json& v = require(node(node_), key, source_, path_, "a string");
  if (!v.is_string())
    throw Error("config field is not a string", source_ + ": " + join_path(path_, key), "a string",
                kind_of(v));
  return v.get<std::string>();
}
std::string Config::get_string(const std::string& key, const std::string& def) const {
  return has(key) ? get_string(key) : def;
}

static const json& require_array(const json& n, const std::string& key, const std::string& source,
                                 const std::string& path) {
  const json& v = require(n, key, source, path, "an array");
  if (!v.is_array())
    throw Error("config field is not an array", source + ": " + join_path(path, key), "an array",
                kind_of(v));
  return v;
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  std::vector<int64_t> out;
  const std::string where = source_ + ": " + join_path(path_, key);
  for (const auto& e : require_array(node(node_), key, source_, path_)) out.push_back(as_int(e, where));
  return out;
}
std::vector<int64_t> Config::get_int_list(const std::string& key, const std::vector<int64_t>& def) const {
  return has(key) ? get_int_list(key) : def;
}

std::vector<double> Config::get_double_list(const std::string& key) const {
  std::vector<double> out;
  const std::string where = source_ + ": " + join_path(path_, key);
  for (const auto& e : require_array(node(node_), key, source_, path_)) out.push_back(as_double(e, where));
  return out;
}

std::vector<std::string> Config::get_string_list(const std::string& key) const {
  std::vector<std::string> out;
  for (const auto& e : require_array(node(node_), key, source_, path_)) {
    if (!e.is_string())
      throw Error("config list element is not a string", source_ + ": " + join_path(path_, key),
                  "strings", kind_of(e));
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::string Config::where(const std::string& key) const { return source_ + ": " + join_path(path_, key); }

namespace {
std::string range_str(int64_t lo, int64_t hi) { return "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]"; }
std::string num_str(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}
std::string range_str(double lo, double hi) {
  return "a finite number in [" + num_str(lo) + ", " + num_str(hi) + "]";
}
}  // namespace

int64_t Config::get_int_in(const std::string& key, int64_t lo, int64_t hi) const {
  const int64_t v = get_int(key);
  if (v < lo || v > hi) throw Error("config value out of range", where(key), range_str(lo, hi), std::to_string(v));
  return v;
}
int64_t Config::get_int(const std::string& key, int64_t def, int64_t lo, int64_t hi) const {
  return has(key) ? get_int_in(key, lo, hi) : def;
}
int64_t Config::get_size(const std::string& key, int64_t def, int64_t lo) const { return get_int(key, def, lo, kMaxSize); }
int64_t Config::get_size(const std::string& key) const { return get_int_in(key, 1, kMaxSize); }

double Config::get_double_in(const std::string& key, double lo, double hi) const {
  const double v = get_double(key);
  if (!std::isfinite(v) || v < lo || v > hi) throw Error("config value out of range", where(key), range_str(lo, hi), num_str(v));
  return v;
}
double Config::get_double(const std::string& key, double def, double lo, double hi) const {
  return has(key) ? get_double_in(key, lo, hi) : def;
}
double Config::get_positive(const std::string& key, double def, double hi) const {
  if (!has(key)) return def;
  const double v = get_double(key);
  if (!std::isfinite(v) || v <= 0 || v > hi)
    throw Error("config value out of range", where(key), "a finite number in (0, " + num_str(hi) + "]", num_str(v));
  return v;
}
double Config::get_epsilon(const std::string& key, double def) const { return get_positive(key, def, 1.0); }

std::vector<int64_t> Config::get_int_list(const std::string& key, const std::vector<int64_t>& def, int64_t lo,
                                          int64_t hi) const {
  if (!has(key)) return def;
  std::vector<int64_t> v = get_int_list(key);
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] < lo || v[i] > hi)
      throw Error("config value out of range", where(key) + "[" + std::to_string(i) + "]", range_str(lo, hi),
                  std::to_string(v[i]));
  return v;
}

std::vector<double> Config::get_double_list(const std::string& key, const std::vector<double>& def, double lo,
                                            double hi) const {
  if (!has(key)) return def;
  std::vector<double> v = get_double_list(key);
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]) || v[i] < lo || v[i] > hi)
      throw Error("config value out of range", where(key) + "[" + std::to_string(i) + "]", range_str(lo, hi),
                  num_str(v[i]));
  return v;
}

void Config::check(bool ok, const std::string& field, const std::string& expected, const std::string& got) const {
  if (!ok) throw Error("inconsistent config", where(field), expected, got);
}

std::vector<std::string> Config::keys() const {
  std::vector<std::string> out;
  for (auto it = node(node_).begin(); it != node(node_).end(); ++it) out.push_back(it.key());
  return out;
}

std::string Config::dump(int indent) const { return node(node_).dump(indent); }

}  // namespace omniflux
