#pragma once
// T5 v1.1's sentencepiece tokenizer as FLUX.1-dev's tokenizer_2/ folder uses it, with the
// behaviour of transformers' T5TokenizerFast:
//   - added tokens (<pad>, </s>, <unk>, <extra_id_0..99>) written in the text are matched first;
//   - each stretch between them goes through sentencepiece (spiece.model: nmt_nfkc, dummy prefix,
//     extra whitespace removed, unigram);
//   - encode() appends </s> (1). FLUX truncates and pads to max_sequence_length:
//     encode(text, {.max_length = 512, .pad_to_max_length = true}) keeps at most 511 text tokens,
//     then </s>, then pads with <pad> (0).
// sentencepiece runs inside the plugin libomniflux_spm.so (see src/text/plugin/spm_plugin_abi.h);
// loading throws omniflux::Error when the plugin cannot be found.
#include <memory>
#include <string>

#include "omniflux/text/tokenizer.h"

namespace omniflux::text {

class T5Tokenizer : public Tokenizer {
 public:
  // spiece.model. A tokenizer.json beside it supplies the added tokens, a tokenizer_config.json
  // model_max_length, extra_ids and the clean-up flag; without them T5's defaults apply (100
  // extra ids after the sentencepiece vocabulary, in reverse order).
  static std::unique_ptr<T5Tokenizer> from_spiece_model(const std::string& path);

  struct Impl;  // opaque; the loader builds it
  explicit T5Tokenizer(std::unique_ptr<Impl> impl);
  ~T5Tokenizer() override;

  std::string kind() const override { return "t5"; }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  std::string id_to_token(int64_t id) const override;
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  int64_t vocab_size() const override;
  std::optional<int64_t> pad_id() const override;

  int64_t eos_id() const;
  int64_t unk_id() const;

 protected:
  std::vector<int64_t> encode_text(std::string_view text, const EncodeOptions& o) const override;
  std::vector<int64_t> suffix_tokens() const override { return {eos_id()}; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace omniflux::text
