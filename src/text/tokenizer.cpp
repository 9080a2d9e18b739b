#include "omniflux/text/tokenizer.h"

#include <algorithm>

#include <sys/stat.h>

#include "omniflux/error.h"
#include "io/paths.h"
#include "text/bpe.h"
#include "text/clip_tokenizer.h"
#include "text/t5_tokenizer.h"
#include "text/files.h"
#include "text/loaders.h"

namespace omniflux::text {

std::vector<int64_t> Tokenizer::encode(std::string_view text, const EncodeOptions& o) const {
  const std::string where = kind() + " tokenizer: encode";
  check_utf8(text, where);
  if (o.pad_to_max_length && o.max_length == 0) {
    throw Error("padding needs a length", where, "max_length > 0 with pad_to_max_length", "max_length = 0");
  }
  for (size_t i = 0; i < o.literal_spans.size(); ++i) {
    const TextSpan& sp = o.literal_spans[i];
    if (sp.begin > sp.end || sp.end > text.size() || (i > 0 && sp.begin < o.literal_spans[i - 1].end))
      throw Error("invalid literal span", where, "sorted, non-overlapping byte ranges within the text",
                  "[" + std::to_string(sp.begin) + ", " + std::to_string(sp.end) + ") of " + std::to_string(text.size()));
  }
  std::vector<int64_t> body = encode_text(text, o);
  std::vector<int64_t> pre, post;
  if (o.add_special_tokens) {
    pre = prefix_tokens();
    post = suffix_tokens();
  }
  if (o.max_length > 0) {
    const size_t specials = pre.size() + post.size();
    if (o.max_length < specials) {
      throw Error("max_length leaves no room for the special tokens", where,
                  "max_length >= " + std::to_string(specials), std::to_string(o.max_length));
    }
    // The text is cut; the special tokens stay (Hugging Face truncation of a single sequence).
    if (body.size() > o.max_length - specials) body.resize(o.max_length - specials);
  }
  std::vector<int64_t> ids;
  ids.reserve(std::max(o.max_length, pre.size() + body.size() + post.size()));
  ids.insert(ids.end(), pre.begin(), pre.end());
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), post.begin(), post.end());
  if (o.pad_to_max_length && ids.size() < o.max_length) {
    const auto pad = pad_id();
    if (!pad) throw Error("the tokenizer has no padding token", where, "a pad_token", "none");
    ids.resize(o.max_length, *pad);
  }
  return ids;
}

int64_t Tokenizer::require_token_id(std::string_view token, const std::string& where) const {
  return text::require_token_id(token_to_id(token), token, where);
}

int64_t require_token_id(std::optional<int64_t> id, std::string_view token, const std::string& where) {
  if (!id)
    throw Error("token missing from the tokenizer", where, "\"" + std::string(token) + "\" in its vocabulary or added tokens",
                "no such token");
  return *id;
}

namespace {

std::unique_ptr<Tokenizer> from_tokenizer_json(const std::string& path) {
  detail::TokenizerJson tj = detail::read_tokenizer_json(path);
  const nlohmann::json& j = tj.doc;
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
    throw Error("not a Hugging Face tokenizer.json", path, "an object with \"model\"", j.type_name());
  }
  const auto& m = j["model"];
  const std::string type = m.value("type", tj.merges ? "BPE" : "");
  if (type == "BPE") {
    const bool clip = m.contains("end_of_word_suffix") && m["end_of_word_suffix"].is_string() &&
                      m["end_of_word_suffix"].get<std::string>() == "</w>";
    if (clip) return detail::clip_from_json(std::move(tj), path);
    return detail::byte_level_bpe_from_json(std::move(tj), path);
  }
  if (type == "Unigram") {
    // The sentencepiece model beside it is what runs; the tokenizer.json gives the added tokens.
    const std::string spiece = detail::join_path(detail::parent_dir(path), "spiece.model");
    if (!detail::is_file(spiece)) {
      throw Error("a Unigram tokenizer.json needs its spiece.model", path, spiece, "no such file");
    }
    std::vector<AddedToken> added;
    if (j.contains("added_tokens")) {
      for (const auto& t : j["added_tokens"]) added.push_back(detail::parse_added_token(t, path + ": added_tokens"));
    }
    return detail::t5_from_spiece(spiece, std::move(added));
  }
  throw Error("unsupported tokenizer model", path + ": model.type", "BPE or Unigram", type);
}

bool looks_like_clip(const std::string& dir) {
  const detail::TokenizerConfig cfg = detail::read_tokenizer_config(dir);
  if (cfg.tokenizer_class.rfind("CLIPTokenizer", 0) == 0) return true;
  if (!cfg.tokenizer_class.empty()) return false;
  // No config: CLIP's vocabulary has the "</w>" forms and <|startoftext|>.
  const std::string vocab = detail::read_file(detail::join_path(dir, "vocab.json"));
  return vocab.find("\"<|startoftext|>\"") != std::string::npos && vocab.find("</w>\"") != std::string::npos;
}

}  // namespace

void check_tokenizer_folder(const std::string& dir, bool allow_outside_paths) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                           "vocab.json", "merges.txt", "spiece.model"}) {
    const std::string p = detail::join_path(dir, name);
    struct stat st;
    if (::lstat(p.c_str(), &st) == 0) resolve_in_folder(dir, name, p, allow_outside_paths);
  }
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (detail::is_dir(path)) {
    const std::string json = detail::join_path(path, "tokenizer.json");
    const std::string spiece = detail::join_path(path, "spiece.model");
    const std::string vocab = detail::join_path(path, "vocab.json");
    const std::string merges = detail::join_path(path, "merges.txt");
    if (detail::is_file(json)) return from_tokenizer_json(json);
    if (detail::is_file(spiece)) return T5Tokenizer::from_spiece_model(spiece);
    if (detail::is_file(vocab) && detail::is_file(merges)) {
      if (looks_like_clip(path)) return ClipTokenizer::from_vocab_merges(path);
      return ByteLevelBpeTokenizer::from_vocab_merges(path);
    }
    throw Error("no tokenizer files in folder", path, "tokenizer.json, spiece.model, or vocab.json + merges.txt",
                "none of them");
  }
  if (!detail::is_file(path)) throw Error("tokenizer path does not exist", path, "a file or folder", "nothing");
  const auto ends_with = [&](const std::string& suffix) {
    return path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".model")) return T5Tokenizer::from_spiece_model(path);
  if (ends_with("vocab.json") || ends_with("merges.txt")) return load_tokenizer(detail::parent_dir(path));
  if (ends_with(".json")) return from_tokenizer_json(path);
  throw Error("unrecognised tokenizer file", path, "tokenizer.json, spiece.model, vocab.json or merges.txt",
              "another file");
}

}  // namespace omniflux::text
