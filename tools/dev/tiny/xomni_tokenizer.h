#pragma once
// X-Omni's tokenizer.json for the tiny folder and for omniflux-plan's stand-in: the real Qwen2
// tokenizer.json with <SOM>, <EOM>, <IMAGE> after the Qwen tokens and <MM-Token-k> for each image
// code (X-Omni-En's tokenizer adds the same tokens).
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "io/file_write.h"

namespace omniflux::tiny {

// Writes `out`; <MM-Token-k> gets id first_code + k, or follows <IMAGE> when first_code < 0 (the
// tiny LM's vocab_size is then that id). Returns the id of <MM-Token-0>.
inline int64_t write_xomni_tokenizer(const std::filesystem::path& qwen_tokenizer, const std::filesystem::path& out,
                                     int64_t codes, int64_t first_code = -1) {
  std::ifstream in(qwen_tokenizer);
  if (!in) throw Error("tokenizer file not found (pass --tokenizers DIR)", qwen_tokenizer.string());
  nlohmann::json j = nlohmann::json::parse(in);
  int64_t next = static_cast<int64_t>(j["model"]["vocab"].size());
  for (const auto& t : j["added_tokens"]) next = std::max<int64_t>(next, t["id"].get<int64_t>() + 1);
  auto add = [&](int64_t id, const std::string& content, bool special) {
    j["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", special}});
  };
  for (const char* t : {"<SOM>", "<EOM>", "<IMAGE>"}) add(next++, t, true);
  const int64_t first = first_code < 0 ? next : first_code;
  for (int64_t k = 0; k < codes; ++k) add(first + k, "<MM-Token-" + std::to_string(k) + ">", false);
  write_file_atomic(out.string(), j.dump());
  return first;
}

}  // namespace omniflux::tiny
