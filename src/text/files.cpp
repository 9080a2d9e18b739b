#include "text/files.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "omniflux/error.h"
#include "io/paths.h"

namespace omniflux::text::detail {

std::string read_file(const std::string& path) {
  require_regular_file(path, "tokenizer file");  // a FIFO would block the read
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
  if (::stat(path.c_str(), &st) != 0) return false;
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) require_regular_file(path, "tokenizer file");  // FIFO, device: refused
  return S_ISREG(st.st_mode);
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
  // Ids index embedding tables: a huge one is a broken file, not a token (Config::kMaxSize).
  if (t.id < 0 || t.id >= (int64_t(1) << 24))
    throw Error("added-token id out of range", where + ": " + t.content, "0 <= id < 2^24", std::to_string(t.id));
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

namespace {

// "a b" -> {a, b}; false when the line is not exactly two non-empty parts.
bool split_merge(const std::string& s, std::pair<std::string, std::string>& out) {
  const size_t sp = s.find(' ');
  if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos) return false;
  out.first.assign(s, 0, sp);
  out.second.assign(s, sp + 1, std::string::npos);
  return true;
}

// SAX handler that builds the JSON tree of a tokenizer.json except model.vocab (captured as a
// flat vector when it is an object, skipped when it is Unigram's array) and model.merges.
class TokenizerJsonSax {
 public:
  using json = nlohmann::json;
  TokenizerJsonSax(TokenizerJson& out, std::string path) : out_(out), path_(std::move(path)) {}

  bool null() { return value(json(nullptr)); }
  bool boolean(bool v) { return value(json(v)); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == Mode::Vocab) return vocab_id(v);
    return value(json(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == Mode::Vocab) {
      if (v > static_cast<json::number_unsigned_t>(INT64_MAX)) return fail("vocabulary id out of range");
      return vocab_id(static_cast<int64_t>(v));
    }
    return value(json(v));
  }
  bool number_float(json::number_float_t v, const json::string_t&) { return value(json(v)); }
  bool string(json::string_t& v) {
    switch (mode_) {
      case Mode::Merges: {
        std::pair<std::string, std::string> m;
        if (!split_merge(v, m)) {
          return fail("merge " + std::to_string(out_.merges->size()) + " is not \"a b\": \"" + v + "\"");
        }
        out_.merges->push_back(std::move(m));
        return true;
      }
      case Mode::MergePair:
        pair_.push_back(std::move(v));
        return true;
      default:
        return value(json(std::move(v)));
    }
  }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }
  bool start_object(std::size_t) {
    switch (mode_) {
      case Mode::Skip: ++skip_; return true;
      case Mode::Dom: break;
      default: return fail("unexpected object in model.vocab or model.merges");
    }
    if (at_model_member("vocab")) {
      mode_ = Mode::Vocab;
      out_.vocab.emplace();
      return true;
    }
    json* o = put(json::object());
    if (stack_.size() == 1 && key_ == "model") model_ = o;
    stack_.push_back(o);
    return true;
  }
  bool key(json::string_t& k) {
    if (mode_ == Mode::Vocab) {
      vocab_key_ = std::move(k);
    } else if (mode_ == Mode::Dom) {
      key_ = std::move(k);
    }
    return true;
  }
  bool end_object() {
    switch (mode_) {
      case Mode::Vocab: mode_ = Mode::Dom; return true;
      case Mode::Skip: if (--skip_ == 0) mode_ = Mode::Dom; return true;
      case Mode::Dom: stack_.pop_back(); return true;
      default: return fail("unbalanced object");
    }
  }
  bool start_array(std::size_t) {
    switch (mode_) {
      case Mode::Skip: ++skip_; return true;
      case Mode::Merges: mode_ = Mode::MergePair; pair_.clear(); return true;
      case Mode::Dom: break;
      default: return fail("unexpected array in model.vocab or model.merges");
    }
    if (at_model_member("vocab")) {  // Unigram's [piece, score] list: not needed, skipped
      mode_ = Mode::Skip;
      skip_ = 1;
      return true;
    }
    if (at_model_member("merges")) {
      mode_ = Mode::Merges;
      out_.merges.emplace();
      return true;
    }
    stack_.push_back(put(json::array()));
    return true;
  }
  bool end_array() {
    switch (mode_) {
      case Mode::Skip: if (--skip_ == 0) mode_ = Mode::Dom; return true;
      case Mode::Merges: mode_ = Mode::Dom; return true;
      case Mode::MergePair:
        if (pair_.size() != 2) return fail("a merge pair must hold two strings");
        out_.merges->emplace_back(std::move(pair_[0]), std::move(pair_[1]));
        mode_ = Mode::Merges;
        return true;
      case Mode::Dom: stack_.pop_back(); return true;
      default: return fail("unbalanced array");
    }
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) { return fail(e.what()); }

  const std::string& error() const { return error_; }

 private:
  enum class Mode { Dom, Vocab, Skip, Merges, MergePair };

  bool at_model_member(const char* name) const {
    return model_ && !stack_.empty() && stack_.back() == model_ && key_ == name;
  }
  json* put(json&& v) {
    if (stack_.empty()) {
      out_.doc = std::move(v);
      return &out_.doc;
    }
    json& top = *stack_.back();
    if (top.is_object()) {
      json& slot = top[key_];
      slot = std::move(v);
      return &slot;
    }
    top.push_back(std::move(v));
    return &top.back();
  }
  bool value(json&& v) {
    switch (mode_) {
      case Mode::Skip: return true;
      case Mode::Dom: put(std::move(v)); return true;
      case Mode::Vocab: return fail("vocabulary id is not an integer");
      default: return fail("merges must be strings or pairs of strings");
    }
  }
  bool vocab_id(int64_t id) {
    out_.vocab->emplace_back(std::move(vocab_key_), id);
    return true;
  }
  bool fail(std::string msg) {
    if (error_.empty()) error_ = std::move(msg);
    return false;
  }

  TokenizerJson& out_;
  std::string path_;
  std::vector<json*> stack_;
  json* model_ = nullptr;
  std::string key_, vocab_key_, error_;
  std::vector<std::string> pair_;
  Mode mode_ = Mode::Dom;
  int skip_ = 0;
};

// SAX handler for vocab.json: one object of integers.
class VocabSax {
 public:
  using json = nlohmann::json;
  explicit VocabSax(Vocab& out) : out_(out) {}
  bool null() { return fail("vocabulary id is not an integer"); }
  bool boolean(bool) { return fail("vocabulary id is not an integer"); }
  bool number_integer(json::number_integer_t v) { return add(v); }
  bool number_unsigned(json::number_unsigned_t v) {
    if (v > static_cast<json::number_unsigned_t>(INT64_MAX)) return fail("vocabulary id out of range");
    return add(static_cast<int64_t>(v));
  }
  bool number_float(json::number_float_t, const json::string_t&) { return fail("vocabulary id is not an integer"); }
  bool string(json::string_t&) { return fail("vocabulary id is not an integer"); }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }
  bool start_object(std::size_t) { return ++depth_ == 1 || fail("nested object in a vocabulary"); }
  bool key(json::string_t& k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) { return fail("a vocabulary is a {token: id} object"); }
  bool end_array() { return fail("a vocabulary is a {token: id} object"); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) { return fail(e.what()); }
  const std::string& error() const { return error_; }

 private:
  bool add(int64_t id) {
    if (depth_ != 1) return fail("a vocabulary is a {token: id} object");
    out_.emplace_back(std::move(key_), id);
    return true;
  }
  bool fail(std::string msg) {
    if (error_.empty()) error_ = std::move(msg);
    return false;
  }
  Vocab& out_;
  std::string key_, error_;
  int depth_ = 0;
};

}  // namespace

TokenizerJson read_tokenizer_json(const std::string& path) {
  const std::string text = read_file(path);
  TokenizerJson out;
  TokenizerJsonSax sax(out, path);
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text, &sax);
  } catch (const nlohmann::json::exception& e) {
    throw Error("invalid JSON", path, "a JSON document", e.what());
  }
  if (!ok) throw Error("malformed tokenizer.json", path, "the Hugging Face tokenizers format", sax.error());
  return out;
}

Vocab read_vocab_json(const std::string& path) {
  const std::string text = read_file(path);
  Vocab out;
  VocabSax sax(out);
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text, &sax);
  } catch (const nlohmann::json::exception& e) {
    throw Error("invalid JSON", path, "a JSON document", e.what());
  }
  if (!ok) throw Error("malformed vocab.json", path, "a {token: id} object", sax.error());
  return out;
}

Merges read_merges_txt(const std::string& path, size_t limit) {
  const std::string text = read_file(path);
  Merges merges;
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
    std::pair<std::string, std::string> m;
    if (!split_merge(line, m)) throw Error("malformed merge line", path + ":" + std::to_string(line_no), "\"a b\"", line);
    merges.push_back(std::move(m));
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
