#pragma once
// Byte-level BPE as Hugging Face's tokenizers library runs it for Qwen2, Qwen2.5(-VL) and X-Omni:
//   1. added tokens (special or not) are cut out of the raw text first, leftmost then longest;
//   2. each stretch between them is NFC-normalised;
//   3. the pre-tokenizer regex splits it into pieces (Qwen2's splits digits one by one);
//   4. each piece's UTF-8 bytes go through GPT-2's byte-to-unicode map and rank-ordered BPE.
// No bos or eos is added. Decoding maps tokens back to bytes; broken UTF-8 becomes U+FFFD.
#include <memory>
#include <string>

#include "omniflux/text/tokenizer.h"

namespace omniflux::text {

// Qwen2's pre-tokenizer regex (transformers' PRETOKENIZE_REGEX), used when a vocab.json +
// merges.txt folder does not say otherwise.
extern const char* const kQwen2PretokenizeRegex;

class ByteLevelBpeTokenizer : public Tokenizer {
 public:
  // A Hugging Face tokenizer.json whose model is BPE with a ByteLevel pre-tokenizer. A
  // tokenizer_config.json beside it supplies pad_token, model_max_length and the clean-up flag.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_tokenizer_json(const std::string& path);
  // The slow-tokenizer files: vocab.json, merges.txt and, if present, tokenizer_config.json
  // (its added_tokens_decoder gives the added tokens) in `dir`. Uses the Qwen2 regex and NFC.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_vocab_merges(const std::string& dir);

  ~ByteLevelBpeTokenizer() override;

  std::string kind() const override { return "byte_level_bpe"; }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  std::string id_to_token(int64_t id) const override;
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  int64_t vocab_size() const override;
  std::optional<int64_t> pad_id() const override;

  struct Impl;  // opaque; the loaders build it
  explicit ByteLevelBpeTokenizer(std::unique_ptr<Impl> impl);

 protected:
  std::vector<int64_t> encode_text(std::string_view text, const EncodeOptions& o) const override;
  std::vector<int64_t> prefix_tokens() const override;
  std::vector<int64_t> suffix_tokens() const override;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace omniflux::text
