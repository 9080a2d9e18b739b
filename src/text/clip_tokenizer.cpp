#include "text/clip_tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include "omniflux/error.h"
#include "text/bpe_core.h"
#include "text/files.h"
#include "text/loaders.h"
#include "text/unicode.h"

namespace omniflux::text {

namespace {

// CLIP's word regex (openai/CLIP simple_tokenizer.py and transformers' CLIPTokenizer, compiled
// with IGNORECASE) without its two special-token alternatives, which are matched before.
const char* const kClipRegex = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+)";

// CLIPTokenizer reads only the first 49152 - 256 - 2 merges of merges.txt.
constexpr size_t kClipMergeLimit = 49152 - 256 - 2;

// whitespace_clean(): every run of whitespace (Python's re \s) becomes one space, ends stripped.
std::string whitespace_clean(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool pending_space = false;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = detail::next_code_point(s, i);
    if (detail::is_python_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out.append(s.substr(start, i - start));
  }
  return out;
}

}  // namespace

struct ClipTokenizer::Impl {
  std::unique_ptr<detail::BpeModel> model;
  std::unique_ptr<detail::Regex> regex;
  std::vector<AddedToken> added;
  detail::AddedTokenMatcher matcher;
  std::unordered_map<int64_t, size_t> added_by_id;
  std::unordered_map<std::string, int64_t> added_by_content;
  int64_t bos = 0, eos = 0;
  std::optional<int64_t> pad;
  bool clean_up = true;  // CLIPTokenizer's default
  int64_t size = 0;
  std::string where;

  std::optional<int64_t> find(std::string_view token) const {
    if (const auto it = added_by_content.find(std::string(token)); it != added_by_content.end()) return it->second;
    return model->id_of(token);
  }

  // Finishes a loader: added tokens (the config's, else bos/eos from the vocabulary), ids, config.
  void finish(std::vector<AddedToken> tokens, const detail::TokenizerConfig& cfg) {
    regex = std::make_unique<detail::Regex>(kClipRegex, where + ": CLIP regex");
    if (tokens.empty()) {
      for (const char* name : {"<|startoftext|>", "<|endoftext|>"}) {
        if (const auto id = model->id_of(name)) tokens.push_back(AddedToken{name, *id, true, false, false});
      }
    }
    added = std::move(tokens);
    matcher = detail::AddedTokenMatcher(added);
    for (size_t i = 0; i < added.size(); ++i) {
      added_by_id.emplace(added[i].id, i);
      added_by_content.emplace(added[i].content, added[i].id);
    }
    size = model->size();
    for (const auto& t : added) size = std::max(size, t.id + 1);
    const auto need = [&](const std::optional<std::string>& name, const char* fallback, const char* role) {
      const std::string n = name ? *name : fallback;
      return text::require_token_id(find(n), n, where + ": CLIP " + role);
    };
    bos = need(cfg.bos_token, "<|startoftext|>", "bos_token");
    eos = need(cfg.eos_token, "<|endoftext|>", "eos_token");
    pad = need(cfg.pad_token, "<|endoftext|>", "pad_token");
    if (cfg.clean_up_tokenization_spaces) clean_up = *cfg.clean_up_tokenization_spaces;
  }
};

ClipTokenizer::ClipTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { added_ = impl_->added; }
ClipTokenizer::~ClipTokenizer() = default;

std::unique_ptr<ClipTokenizer> ClipTokenizer::from_vocab_merges(const std::string& dir) {
  const std::string vocab_path = detail::join_path(dir, "vocab.json");
  const std::string merges_path = detail::join_path(dir, "merges.txt");
  auto impl = std::make_unique<Impl>();
  impl->where = dir;
  impl->model = std::make_unique<detail::BpeModel>(detail::read_vocab_json(vocab_path),
                                                   detail::read_merges_txt(merges_path, kClipMergeLimit), "</w>",
                                                   false, dir);
  const detail::TokenizerConfig cfg = detail::read_tokenizer_config(dir);
  impl->finish(cfg.added_tokens, cfg);
  auto tok = std::make_unique<ClipTokenizer>(std::move(impl));
  tok->set_model_max_length(cfg.model_max_length ? cfg.model_max_length : std::optional<size_t>(kContextLength));
  return tok;
}

std::unique_ptr<ClipTokenizer> ClipTokenizer::from_tokenizer_json(const std::string& path) {
  return detail::clip_from_json(detail::read_tokenizer_json(path), path);
}

std::unique_ptr<ClipTokenizer> detail::clip_from_json(TokenizerJson tj, const std::string& path) {
  const nlohmann::json& j = tj.doc;
  auto impl = std::make_unique<ClipTokenizer::Impl>();
  impl->where = path;
  std::vector<AddedToken> added;
  try {
    const auto& m = j.at("model");
    if (m.value("type", "BPE") != "BPE" || m.value("end_of_word_suffix", "") != "</w>") {
      throw Error("not a CLIP tokenizer.json", path + ": model", "BPE with end_of_word_suffix \"</w>\"",
                  m.value("type", "?") + " / \"" + m.value("end_of_word_suffix", "") + "\"");
    }
    if (!tj.vocab || !tj.merges) {
      throw Error("BPE model without vocab or merges", path + ": model", "\"vocab\": {...} and \"merges\": [...]",
                  "missing");
    }
    impl->model = std::make_unique<detail::BpeModel>(std::move(*tj.vocab), *tj.merges, "</w>", false, path);
    if (j.contains("added_tokens")) {
      for (const auto& t : j["added_tokens"]) added.push_back(detail::parse_added_token(t, path + ": added_tokens"));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error("malformed tokenizer.json", path, "the Hugging Face tokenizers format", e.what());
  }
  // The normaliser and pre-tokenizer of the file are CLIPTokenizerFast's approximation of the
  // same steps; the slow tokenizer's exact steps (see the header) are used instead.
  const detail::TokenizerConfig cfg = detail::read_tokenizer_config(detail::parent_dir(path));
  impl->finish(std::move(added), cfg);
  auto tok = std::make_unique<ClipTokenizer>(std::move(impl));
  tok->set_model_max_length(cfg.model_max_length ? cfg.model_max_length
                                                 : std::optional<size_t>(ClipTokenizer::kContextLength));
  return tok;
}

std::vector<int64_t> ClipTokenizer::encode_text(std::string_view text, const EncodeOptions& o) const {
  EncodeStats* stats = o.stats;
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->matcher.split(
      text,
      [&](std::string_view seg) {
        if (stats) ++stats->segments;
        const std::string clean = detail::python_lower(whitespace_clean(detail::nfc(seg)));
        detail::split_pieces(*impl_->regex, {true, false}, clean, [&](std::string_view word) {
          if (stats) ++stats->pieces;
          impl_->model->encode_piece(word, ids, stats ? &stats->bpe_work : nullptr);
        });
      },
      [&](size_t idx) {
        if (stats) ++stats->added_tokens;
        ids.push_back(impl_->added[idx].id);
      },
      o.literal_spans);
  return ids;
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  // CLIPTokenizer.decode: bos and eos are special tokens, so they are part of the same character
  // stream as the rest; "</w>" becomes a space and the ends are stripped.
  std::string bytes;
  for (const int64_t id : ids) {
    const std::string* token = nullptr;
    if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
      if (skip_special_tokens && impl_->added[it->second].special) continue;
      token = &impl_->added[it->second].content;
    } else {
      token = impl_->model->token_of(id);
    }
    if (!token) {
      throw Error("unknown token id", impl_->where + ": decode", "an id in [0, " + std::to_string(vocab_size()) + ")",
                  std::to_string(id));
    }
    for (size_t i = 0; i < token->size();) {
      const size_t start = i;
      const int b = detail::unicode_to_byte(detail::next_code_point(*token, i));
      if (b >= 0) {
        bytes += static_cast<char>(b);
      } else {
        bytes.append(*token, start, i - start);
      }
    }
  }
  std::string text = detail::utf8_lossy(bytes);
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0;;) {
    const size_t hit = text.find("</w>", pos);
    out.append(text, pos, hit == std::string::npos ? std::string::npos : hit - pos);
    if (hit == std::string::npos) break;
    out += ' ';
    pos = hit + 4;
  }
  // Python's str.strip().
  size_t b = 0, e = out.size();
  while (b < e) {
    size_t k = b;
    if (!detail::is_python_space(detail::next_code_point(out, k))) break;
    b = k;
  }
  while (e > b) {
    size_t k = e - 1;
    while (k > b && (static_cast<unsigned char>(out[k]) & 0xC0) == 0x80) --k;
    size_t kk = k;
    if (!detail::is_python_space(detail::next_code_point(out, kk))) break;
    e = k;
  }
  out = out.substr(b, e - b);
  return impl_->clean_up ? detail::clean_up_tokenization(std::move(out)) : out;
}

std::string ClipTokenizer::id_to_token(int64_t id) const {
  if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (const std::string* t = impl_->model->token_of(id)) return *t;
  throw Error("unknown token id", impl_->where + ": id_to_token", "an id in [0, " + std::to_string(vocab_size()) + ")",
              std::to_string(id));
}

std::optional<int64_t> ClipTokenizer::token_to_id(std::string_view token) const { return impl_->find(token); }
int64_t ClipTokenizer::vocab_size() const { return impl_->size; }
std::optional<int64_t> ClipTokenizer::pad_id() const { return impl_->pad; }
int64_t ClipTokenizer::bos_id() const { return impl_->bos; }
int64_t ClipTokenizer::eos_id() const { return impl_->eos; }

}  // namespace omniflux::text
