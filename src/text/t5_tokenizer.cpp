#include "text/t5_tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include "omniflux/error.h"
#include "io/paths.h"
#include "text/bpe_core.h"
#include "text/files.h"
#include "text/loaders.h"
#include "text/spm_plugin.h"
#include "text/unicode.h"

namespace omniflux::text {

struct T5Tokenizer::Impl {
  std::shared_ptr<detail::SpmModel> spm;
  std::vector<AddedToken> added;
  detail::AddedTokenMatcher matcher;
  std::unordered_map<int64_t, size_t> added_by_id;
  std::unordered_map<std::string, int64_t> added_by_content;
  int64_t eos = 1, unk = 2;
  std::optional<int64_t> pad;
  bool clean_up = true;  // T5's tokenizer_config default
  int64_t size = 0;
  std::string where;

  std::optional<int64_t> find(std::string_view token) const {
    if (const auto it = added_by_content.find(std::string(token)); it != added_by_content.end()) return it->second;
    if (const auto id = spm->piece_to_id(token)) return *id;
    return std::nullopt;
  }
};

T5Tokenizer::T5Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { added_ = impl_->added; }
T5Tokenizer::~T5Tokenizer() = default;

std::unique_ptr<T5Tokenizer> detail::t5_from_spiece(const std::string& path,
                                                    std::optional<std::vector<AddedToken>> added) {
  auto impl = std::make_unique<T5Tokenizer::Impl>();
  impl->where = path;
  require_regular_file(path, "tokenizer file");  // a FIFO would block sentencepiece's read
  impl->spm = detail::SpmModel::load_file(path);
  const std::string dir = detail::parent_dir(path);
  const detail::TokenizerConfig cfg = detail::read_tokenizer_config(dir);
  const int32_t n = impl->spm->size();
  if (!added) {
    const std::string json_path = detail::join_path(dir, "tokenizer.json");
    if (!cfg.added_tokens.empty()) {
      added = cfg.added_tokens;
    } else if (detail::is_file(json_path)) {
      const nlohmann::json j = detail::read_tokenizer_json(json_path).doc;
      added.emplace();
      if (j.contains("added_tokens")) {
        for (const auto& t : j["added_tokens"]) added->push_back(detail::parse_added_token(t, json_path + ": added_tokens"));
      }
    } else {
      // T5Tokenizer's defaults: the sentencepiece control pieces, then extra_ids sentinels
      // counted down from the end (<extra_id_0> is the last id).
      added.emplace();
      for (int which : {3, 2, 0}) {  // pad, eos, unk
        const int32_t id = impl->spm->special_id(which);
        if (id < 0) continue;
        if (const auto piece = impl->spm->id_to_piece(id)) added->push_back(AddedToken{*piece, id, true, false, false});
      }
      const int extra = cfg.extra_ids.value_or(100);
      for (int k = 0; k < extra; ++k) {
        added->push_back(AddedToken{"<extra_id_" + std::to_string(k) + ">", n + extra - 1 - k, true, false, false});
      }
    }
  }
  impl->added = std::move(*added);
  impl->matcher = detail::AddedTokenMatcher(impl->added);
  for (size_t i = 0; i < impl->added.size(); ++i) {
    impl->added_by_id.emplace(impl->added[i].id, i);
    impl->added_by_content.emplace(impl->added[i].content, impl->added[i].id);
  }
  impl->size = n;
  for (const auto& t : impl->added) impl->size = std::max(impl->size, t.id + 1);
  const auto pick = [&](const std::optional<std::string>& name, const char* fallback, int which) -> std::optional<int64_t> {
    if (const auto id = impl->find(name ? *name : fallback)) return id;
    const int32_t id = impl->spm->special_id(which);
    if (id >= 0) return id;
    return std::nullopt;
  };
  const auto eos = pick(cfg.eos_token, "</s>", 2);
  if (!eos) throw Error("T5 tokenizer without an end-of-sequence token", path, "</s> in the vocabulary", "none");
  impl->eos = *eos;
  impl->unk = pick(cfg.unk_token, "<unk>", 0).value_or(-1);
  impl->pad = pick(cfg.pad_token, "<pad>", 3);
  if (cfg.clean_up_tokenization_spaces) impl->clean_up = *cfg.clean_up_tokenization_spaces;
  auto tok = std::make_unique<T5Tokenizer>(std::move(impl));
  tok->set_model_max_length(cfg.model_max_length);
  return tok;
}

std::unique_ptr<T5Tokenizer> T5Tokenizer::from_spiece_model(const std::string& path) {
  return detail::t5_from_spiece(path, std::nullopt);
}

std::vector<int64_t> T5Tokenizer::encode_text(std::string_view text, const EncodeOptions& o) const {
  EncodeStats* stats = o.stats;
  std::vector<int64_t> ids;
  impl_->matcher.split(
      text,
      [&](std::string_view seg) {
        if (stats) ++stats->segments;
        const std::vector<int32_t> part = impl_->spm->encode(seg);
        if (stats) stats->pieces += part.size();
        ids.insert(ids.end(), part.begin(), part.end());
      },
      [&](size_t idx) {
        if (stats) ++stats->added_tokens;
        ids.push_back(impl_->added[idx].id);
      },
      o.literal_spans);
  return ids;
}

std::string T5Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  // T5TokenizerFast: tokens go through the Metaspace decoder ("▁" becomes a space), then
  // clean_up_tokenization.
  static const std::string kMeta = "\xE2\x96\x81";  // ▁
  std::string out;
  bool first = true;
  for (const int64_t id : ids) {
    std::string token;
    if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
      if (skip_special_tokens && impl_->added[it->second].special) continue;
      token = impl_->added[it->second].content;
    } else {
      const auto piece = id >= 0 && id <= INT32_MAX ? impl_->spm->id_to_piece(static_cast<int32_t>(id)) : std::nullopt;
      if (!piece) {
        throw Error("unknown token id", impl_->where + ": decode",
                    "an id in [0, " + std::to_string(vocab_size()) + ")", std::to_string(id));
      }
      token = *piece;
    }
    // Like the Metaspace decoder, every "▁" of the first token is dropped, not only the leading one.
    for (size_t pos = 0;;) {
      const size_t hit = token.find(kMeta, pos);
      out.append(token, pos, hit == std::string::npos ? std::string::npos : hit - pos);
      if (hit == std::string::npos) break;
      if (!first) out += ' ';
      pos = hit + kMeta.size();
    }
    first = false;
  }
  return impl_->clean_up ? detail::clean_up_tokenization(std::move(out)) : out;
}

std::string T5Tokenizer::id_to_token(int64_t id) const {
  if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (id >= 0 && id <= INT32_MAX) {
    if (auto piece = impl_->spm->id_to_piece(static_cast<int32_t>(id))) return *piece;
  }
  throw Error("unknown token id", impl_->where + ": id_to_token", "an id in [0, " + std::to_string(vocab_size()) + ")",
              std::to_string(id));
}

std::optional<int64_t> T5Tokenizer::token_to_id(std::string_view token) const { return impl_->find(token); }
int64_t T5Tokenizer::vocab_size() const { return impl_->size; }
std::optional<int64_t> T5Tokenizer::pad_id() const { return impl_->pad; }
int64_t T5Tokenizer::eos_id() const { return impl_->eos; }
int64_t T5Tokenizer::unk_id() const { return impl_->unk; }

}  // namespace omniflux::text
