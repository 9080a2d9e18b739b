#pragma once
// File and tokenizer_config.json helpers shared by the tokenizer loaders (internal).
#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "omniflux/text/tokenizer.h"

namespace omniflux::text::detail {

std::string read_file(const std::string& path);
nlohmann::json read_json(const std::string& path);
bool is_file(const std::string& path);
bool is_dir(const std::string& path);
std::string parent_dir(const std::string& path);  // "." for a bare file name
std::string join_path(const std::string& dir, const std::string& name);

// The fields of a Hugging Face tokenizer_config.json that the tokenizers use.
struct TokenizerConfig {
  bool present = false;
  std::string tokenizer_class;
  std::optional<size_t> model_max_length;  // absent when unset or the 1e30 placeholder
  std::optional<std::string> pad_token, eos_token, bos_token, unk_token;
  std::optional<bool> clean_up_tokenization_spaces;
  std::optional<int> extra_ids;
  std::vector<AddedToken> added_tokens;  // from added_tokens_decoder, sorted by id
};
// Reads dir/tokenizer_config.json; an absent file gives a config with present == false.
TokenizerConfig read_tokenizer_config(const std::string& dir);

// Parses one added-token entry of tokenizer.json "added_tokens" (with "id").
AddedToken parse_added_token(const nlohmann::json& j, const std::string& where);

// BPE vocabularies and merges, as read from the files.
using Vocab = std::vector<std::pair<std::string, int64_t>>;
using Merges = std::vector<std::pair<std::string, std::string>>;

// A tokenizer.json, read with a streaming parser: the large model.vocab and model.merges go
// straight into flat vectors instead of a JSON tree (several times faster on Qwen2's 4.7 MB).
struct TokenizerJson {
  nlohmann::json doc;            // everything else; model.vocab / model.merges are absent from it
  std::optional<Vocab> vocab;    // model.vocab when it is a {token: id} object (BPE)
  std::optional<Merges> merges;  // model.merges: "a b" strings (legacy) or ["a", "b"] pairs
};
TokenizerJson read_tokenizer_json(const std::string& path);
// vocab.json: one {token: id} object.
Vocab read_vocab_json(const std::string& path);
// merges.txt: an optional "#version" first line, then one "a b" per line (LF or CRLF).
// limit > 0 keeps only the first `limit` merges.
Merges read_merges_txt(const std::string& path, size_t limit);

// Hugging Face's clean_up_tokenization: removes the space before . ? ! , and some contractions.
std::string clean_up_tokenization(std::string s);

}  // namespace omniflux::text::detail
