#include "text/files.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "omniflux/error.h"

namespace omniflux::text::detail {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open file", path, "a readable file", "open failed");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error("cannot read file", path, "a readable file", "read failed");
  return ss.str();
}

nlohmann::json read_json(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error("invalid JSON", path, "a JSON document", e.what());
  }
}

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

namespace {

std::optional<std::string> token_string(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return std::nullopt;
}

bool flag(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
}

}  // namespace

AddedToken parse_added_token(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("content") || !j["content"].is_string() || !j.contains("id") ||
      !j["id"].is_number_integer()) {
    throw Error("malformed added token", where, "{\"id\": int, \"content\": string, ...}", j.dump().substr(0, 200));
  }
  AddedToken t;
  t.content = j["content"].get<std::string>();
  t.id = j["id"].get<int64_t>();
  t.special = flag(j, "special");
  t.lstrip = flag(j, "lstrip");
  t.rstrip = flag(j, "rstrip");
  if (t.id < 0) throw Error("negative added-token id", where, ">= 0", std::to_string(t.id));
  if (t.content.empty()) throw Error("empty added token", where, "non-empty content", "\"\"");
  check_utf8(t.content, where);
  return t;
}

TokenizerConfig read_tokenizer_config(const std::string& dir) {
  TokenizerConfig c;
  const std::string path = join_path(dir, "tokenizer_config.json");
  if (!is_file(path)) return c;
  const nlohmann::json j = read_json(path);
  if (!j.is_object()) throw Error("tokenizer_config.json is not an object", path, "a JSON object", j.type_name());
  c.present = true;
  if (j.contains("tokenizer_class") && j["tokenizer_class"].is_string()) c.tokenizer_class = j["tokenizer_class"];
  if (j.contains("model_max_length") && j["model_max_length"].is_number()) {
    const double m = j["model_max_length"].get<double>();
    if (m >= 1 && m < 1e12) c.model_max_length = static_cast<size_t>(m);  // 1e30 means "unset"
  }
  if (j.contains("pad_token")) c.pad_token = token_string(j["pad_token"]);
  if (j.contains("eos_token")) c.eos_token = token_string(j["eos_token"]);
  if (j.contains("bos_token")) c.bos_token = token_string(j["bos_token"]);
  if (j.contains("unk_token")) c.unk_token = token_string(j["unk_token"]);
  if (j.contains("clean_up_tokenization_spaces") && j["clean_up_tokenization_spaces"].is_boolean())
    c.clean_up_tokenization_spaces = j["clean_up_tokenization_spaces"].get<bool>();
  if (j.contains("extra_ids") && j["extra_ids"].is_number_integer()) c.extra_ids = j["extra_ids"].get<int>();
  if (j.contains("added_tokens_decoder") && j["added_tokens_decoder"].is_object()) {
    for (const auto& [key, val] : j["added_tokens_decoder"].items()) {
      nlohmann::json entry = val;
      try {
        entry["id"] = std::stoll(key);
      } catch (...) {
        throw Error("added_tokens_decoder key is not an id", path, "an integer", key);
      }
      c.added_tokens.push_back(parse_added_token(entry, path + ": added_tokens_decoder"));
    }
    std::sort(c.added_tokens.begin(), c.added_tokens.end(),
              [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  }
  return c;
}

std::unordered_map<std::string, int64_t> parse_vocab(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error("vocabulary is not an object", where, "{token: id}", j.type_name());
  std::unordered_map<std::string, int64_t> vocab;
  vocab.reserve(j.size());
  for (const auto& [tok, id] : j.items()) {
    if (!id.is_number_integer()) throw Error("vocabulary id is not an integer", where + ": \"" + tok + "\"", "an integer", id.dump());
    vocab.emplace(tok, id.get<int64_t>());
  }
  return vocab;
}

namespace {

std::pair<std::string, std::string> split_merge(const std::string& s, const std::string& where) {
  const size_t sp = s.find(' ');
  if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos) {
    throw Error("malformed merge", where, "\"a b\"", s);
  }
  return {s.substr(0, sp), s.substr(sp + 1)};
}

}  // namespace

std::vector<std::pair<std::string, std::string>> parse_merges(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) throw Error("merges is not an array", where, "an array", j.type_name());
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(j.size());
  for (const auto& e : j) {
    const std::string at = where + "[" + std::to_string(merges.size()) + "]";
    if (e.is_string()) {
      merges.push_back(split_merge(e.get<std::string>(), at));
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    } else {
      throw Error("malformed merge", at, "\"a b\" or [\"a\", \"b\"]", e.dump().substr(0, 200));
    }
  }
  return merges;
}

std::vector<std::pair<std::string, std::string>> read_merges_txt(const std::string& path, size_t limit) {
  const std::string text = read_file(path);
  std::vector<std::pair<std::string, std::string>> merges;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    if (limit && merges.size() == limit) break;
    merges.push_back(split_merge(line, path + ":" + std::to_string(line_no)));
  }
  return merges;
}

std::string clean_up_tokenization(std::string s) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    const std::string f(from), t(to);
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    for (size_t hit; (hit = s.find(f, pos)) != std::string::npos; pos = hit + f.size()) {
      out.append(s, pos, hit - pos);
      out += t;
    }
    out.append(s, pos, std::string::npos);
    s.swap(out);
  }
  return s;
}

}  // namespace omniflux::text::detail
