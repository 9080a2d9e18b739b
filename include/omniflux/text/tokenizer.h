#pragma once
// The common tokenizer interface: text -> ids -> text, id-exact with the Hugging Face tokenizers
// the pipelines were trained with. Three kinds implement it:
//   - ByteLevelBpeTokenizer (Qwen2 / Qwen2.5 / X-Omni tokenizer.json, or vocab.json + merges.txt)
//   - ClipTokenizer         (FLUX.1-dev tokenizer/: CLIP-L BPE with </w>, bos and eos)
//   - T5Tokenizer           (FLUX.1-dev tokenizer_2/: spiece.model through libsentencepiece)
// load_tokenizer() picks the kind from the files it finds.
//
// Every function that takes text requires valid UTF-8 and throws omniflux::Error otherwise.
// Encoding and decoding are const and safe to call from several threads at once.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace omniflux::text {

// A token matched in raw text before the model sees it (<|im_start|>, <extra_id_0>, <MM-Token-7>).
struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false;  // dropped by decode(..., skip_special_tokens = true)
  bool lstrip = false;   // also swallows whitespace on its left
  bool rstrip = false;   // also swallows whitespace on its right
};

// Work counters, for benchmarks and linearity tests.
struct EncodeStats {
  size_t segments = 0;      // text pieces between added tokens
  size_t added_tokens = 0;  // added tokens matched in the text
  size_t pieces = 0;        // pre-tokenizer pieces (BPE words)
  size_t bpe_work = 0;      // BPE symbols + merge-queue pushes and pops (0 for sentencepiece)
};

// A byte range [begin, end) of a text.
struct TextSpan {
  size_t begin = 0, end = 0;
};

// What the literal text of an added token ("<|im_start|>", "<|image_pad|>", "<SOM>") inside a
// user's prompt becomes. Hugging Face matches it as the token, which lets a prompt forge a chat
// turn or an image placeholder that no image backs; omniflux keeps it text unless asked.
enum class PromptSpecialTokens {
  Text,   // default: encoded as ordinary text (the prompt cannot add control tokens)
  Parse,  // Hugging Face's behaviour: matched as the token
};

struct EncodeOptions {
  // The tokens the tokenizer itself adds around the text: bos and eos for CLIP, eos for T5,
  // none for Qwen2. Hugging Face's add_special_tokens.
  bool add_special_tokens = true;
  // 0: no truncation. Otherwise keep at most max_length ids, special tokens included (the text is
  // cut, the bos/eos stay), like Hugging Face's truncation=True, max_length=N.
  size_t max_length = 0;
  // Pad with pad_id() up to max_length (padding="max_length"). Needs max_length > 0.
  bool pad_to_max_length = false;
  EncodeStats* stats = nullptr;  // optional work counters, accumulated
  // User text inside a rendered template (chat_template.h reports the spans): no added token is
  // matched in these byte ranges, so they encode as plain text. Sorted, non-overlapping. The text
  // around them (the template's own tokens) is matched as usual.
  std::vector<TextSpan> literal_spans;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // "byte_level_bpe", "clip" or "t5".
  virtual std::string kind() const = 0;

  // Text to ids. With default options: the special tokens the tokenizer adds, no truncation,
  // no padding.
  std::vector<int64_t> encode(std::string_view text, const EncodeOptions& options = {}) const;

  // Ids to text, like Hugging Face's decode. skip_special_tokens drops added tokens whose
  // special flag is set. Unknown ids are an Error.
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const = 0;

  // The vocabulary string of an id (byte-level form for BPE, "▁"-form for sentencepiece),
  // or the content of an added token. Throws for ids that name no token.
  virtual std::string id_to_token(int64_t id) const = 0;
  // The id of a vocabulary string or added-token content; nullopt when there is none.
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  // token_to_id for a token the caller cannot do without ("<|im_end|>", "<SOM>"...): an Error
  // naming the token and `where` when there is none.
  int64_t require_token_id(std::string_view token, const std::string& where) const;
  // One past the largest id (base vocabulary and added tokens): len(tokenizer) in Hugging Face.
  virtual int64_t vocab_size() const = 0;

  // The id used for padding (CLIP 49407, T5 0, Qwen2 <|endoftext|>); nullopt when unknown.
  virtual std::optional<int64_t> pad_id() const = 0;
  // tokenizer_config.json model_max_length when the folder had one that is not a placeholder.
  std::optional<size_t> model_max_length() const { return model_max_length_; }

  const std::vector<AddedToken>& added_tokens() const { return added_; }

  // Overrides model_max_length (what --pad uses when no --max-length is given).
  void set_model_max_length(std::optional<size_t> n) { model_max_length_ = n; }

 protected:
  // The ids of the text alone, without the tokens add_special_tokens adds. `text` is valid UTF-8;
  // `o.stats` and `o.literal_spans` apply.
  virtual std::vector<int64_t> encode_text(std::string_view text, const EncodeOptions& o) const = 0;
  virtual std::vector<int64_t> prefix_tokens() const { return {}; }
  virtual std::vector<int64_t> suffix_tokens() const { return {}; }

  std::vector<AddedToken> added_;
  std::optional<size_t> model_max_length_;
};

// Loads a tokenizer from a tokenizer.json, a folder holding one, a folder with vocab.json and
// merges.txt, a spiece.model, or a folder holding spiece.model. Relative symlinks are followed:
// the path is the caller's choice. Model and pipeline loaders check their folder first with
// check_tokenizer_folder.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);
// The tokenizer files of a model folder (tokenizer.json, tokenizer_config.json, vocab.json, ...)
// must resolve inside it, symlinks included (a Hugging Face cache snapshot may point into its
// repository's blobs/): an Error otherwise, unless `allow_outside_paths`
// (RuntimeOptions::allow_outside_paths).
void check_tokenizer_folder(const std::string& dir, bool allow_outside_paths = false);

// `id` (a lookup of `token`), or the Error Tokenizer::require_token_id throws: for the loaders that
// look tokens up before the Tokenizer exists.
int64_t require_token_id(std::optional<int64_t> id, std::string_view token, const std::string& where);

// Throws omniflux::Error naming the first invalid byte when `text` is not valid UTF-8.
void check_utf8(std::string_view text, const std::string& where);

}  // namespace omniflux::text
