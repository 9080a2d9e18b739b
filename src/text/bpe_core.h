#pragma once
// Building blocks of the BPE tokenizers (internal): the pre-tokenizer regex (PCRE2), the
// added-token matcher, the byte-level alphabet and the rank-ordered BPE merge.
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "omniflux/text/tokenizer.h"

namespace omniflux::text::detail {

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100 + n.
const std::array<char32_t, 256>& byte_to_unicode();
// The inverse, as a lookup from code point (< 0x180) to byte; -1 for code points outside the map.
int unicode_to_byte(char32_t cp);
// The byte-level string of raw bytes (what a byte-level vocabulary stores).
std::string bytes_to_byte_level(std::string_view bytes);

// A compiled pre-tokenizer regex. Patterns are written for Oniguruma (Hugging Face) or Python's
// regex module; \s and \S are rewritten to Unicode White_Space, which is what both mean, because
// PCRE2's \s also matches U+180E. Matching uses PCRE2_UTF | PCRE2_UCP and JIT when available.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls fn(begin, end) for every non-empty match, left to right. `text` must be valid UTF-8.
  void for_each_match(std::string_view text, const std::function<void(size_t, size_t)>& fn) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8
  std::string where_;
};

// How a Split pre-tokenizer treats matches and the text between them.
struct SplitRule {
  bool keep_matches = true;
  bool keep_gaps = true;
};
// Splits `text` into the pieces a Split pre-tokenizer yields, in order.
void split_pieces(const Regex& re, const SplitRule& rule, std::string_view text,
                  const std::function<void(std::string_view)>& fn);

// Finds added tokens in raw text: leftmost match first, then the longest one starting there.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  // Calls on_text for each stretch of text between matches (never empty) and on_token with the
  // index of the matched token, in text order.
  // No token is matched where it would overlap one of `literal` (sorted byte ranges).
  void split(std::string_view text, const std::function<void(std::string_view)>& on_text,
             const std::function<void(size_t)>& on_token, const std::vector<TextSpan>& literal = {}) const;
  bool empty() const { return tokens_.empty(); }

 private:
  int32_t child(int32_t node, unsigned char b) const;
  std::vector<AddedToken> tokens_;
  std::vector<int32_t> node_token_;                  // node -> token index or -1
  std::unordered_map<uint64_t, int32_t> edges_;      // (node << 8 | byte) -> node
  std::array<bool, 256> first_byte_{};
};

// Vocabulary + merges of a byte-level BPE model, with the merge loop.
class BpeModel {
 public:
  // vocab: (token string, id) pairs; ids must be dense enough to index an array. merges: pairs
  // of token strings in rank order. suffix: CLIP's "</w>" end-of-word marker ("" for GPT-2 style).
  BpeModel(std::vector<std::pair<std::string, int64_t>> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, std::string suffix,
           bool ignore_merges, const std::string& where);

  // Appends the ids of one pre-tokenizer piece (raw UTF-8 bytes) to `out`.
  void encode_piece(std::string_view piece, std::vector<int64_t>& out, size_t* work) const;

  const std::string* token_of(int64_t id) const {
    return id >= 0 && static_cast<size_t>(id) < tokens_.size() && present_[id] ? &tokens_[id] : nullptr;
  }
  std::optional<int64_t> id_of(std::string_view token) const {
    const int32_t id = find(token);
    return id < 0 ? std::nullopt : std::optional<int64_t>(id);
  }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  const std::string& suffix() const { return suffix_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  // Open-addressing tables: loading Qwen2's 151k tokens and merges through std::unordered_map
  // took most of the load time, and the merge lookup is the BPE inner loop.
  int32_t find(std::string_view token) const;
  const Merge* find_merge(int32_t left, int32_t right) const;
  void merge(std::vector<int32_t>& symbols, size_t* work) const;

  std::vector<std::string> tokens_;  // id -> token ("" where present_ is 0)
  std::vector<uint8_t> present_;
  std::vector<int32_t> token_slots_;  // hash slot -> id, -1 when empty
  std::vector<std::pair<uint64_t, Merge>> merge_slots_;  // (left << 32 | right) -> merge; key ~0 when empty
  int merge_bits_ = 0;
  std::array<int32_t, 256> byte_id_{};         // id of each single byte
  std::array<int32_t, 256> byte_suffix_id_{};  // id of each single byte + suffix
  std::string suffix_;
  bool ignore_merges_ = false;

  // Piece -> ids for short pieces. Cleared when it grows too large.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace omniflux::text::detail
