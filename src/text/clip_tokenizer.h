#pragma once
// CLIP-L's BPE tokenizer as FLUX.1-dev's tokenizer/ folder uses it (transformers' CLIPTokenizer):
//   1. <|startoftext|> and <|endoftext|> written in the text are matched first;
//   2. the rest is NFC-normalised, runs of whitespace become one space, the ends are stripped,
//      and it is lower-cased (Python's str.lower);
//   3. CLIP's regex splits it into words (whitespace is dropped, digits are one per word);
//   4. each word's bytes go through the byte-level map, its last symbol gets "</w>", and BPE runs.
// encode() adds <|startoftext|> (49406) and <|endoftext|> (49407). FLUX truncates and pads to 77:
// encode(text, {.max_length = 77, .pad_to_max_length = true}) gives bos + at most 75 tokens +
// eos, padded with 49407.
#include <memory>
#include <string>

#include "omniflux/text/tokenizer.h"

namespace omniflux::text {

class ClipTokenizer : public Tokenizer {
 public:
  static constexpr size_t kContextLength = 77;

  // vocab.json + merges.txt (+ tokenizer_config.json) in `dir`, as in FLUX.1-dev's tokenizer/.
  static std::unique_ptr<ClipTokenizer> from_vocab_merges(const std::string& dir);
  // A tokenizer.json whose BPE model has end_of_word_suffix "</w>" (CLIPTokenizerFast's file).
  static std::unique_ptr<ClipTokenizer> from_tokenizer_json(const std::string& path);

  struct Impl;  // opaque; the loaders build it
  explicit ClipTokenizer(std::unique_ptr<Impl> impl);
  ~ClipTokenizer() override;

  std::string kind() const override { return "clip"; }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  std::string id_to_token(int64_t id) const override;
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  int64_t vocab_size() const override;
  std::optional<int64_t> pad_id() const override;

  int64_t bos_id() const;
  int64_t eos_id() const;

 protected:
  std::vector<int64_t> encode_text(std::string_view text, const EncodeOptions& o) const override;
  std::vector<int64_t> prefix_tokens() const override { return {bos_id()}; }
  std::vector<int64_t> suffix_tokens() const override { return {eos_id()}; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace omniflux::text
