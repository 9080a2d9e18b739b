#pragma once
// Writes a tiny byte-level BPE tokenizer.json for tests of models with small vocabularies: the
// 256 byte symbols (GPT-2 bytes_to_unicode, in byte order) are ids 0..255, no merges, filler
// tokens "tok<i>" up to `vocab_size`, then the given added tokens.
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

inline std::string tiny_utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) s += char(cp);
  else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

inline void write_tiny_tokenizer(const std::string& path, int64_t vocab_size,
                                 const std::vector<std::pair<std::string, int64_t>>& added) {
  nlohmann::json vocab = nlohmann::json::object();
  uint32_t extra = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool kept = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    vocab[tiny_utf8(kept ? b : 256 + extra++)] = b;
  }
  for (int64_t i = 256; i < vocab_size; ++i) vocab["tok" + std::to_string(i)] = i;
  nlohmann::json added_json = nlohmann::json::array();
  for (const auto& [content, id] : added)
    added_json.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                          {"rstrip", false}, {"normalized", false}, {"special", true}});
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", added_json},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false},
                 {"byte_fallback", false}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  std::ofstream(path) << j.dump();
}
