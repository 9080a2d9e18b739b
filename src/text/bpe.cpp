#include "text/bpe.h"

#include <algorithm>
#include <unordered_map>

#include "omniflux/error.h"
#include "text/bpe_core.h"
#include "text/files.h"
#include "text/loaders.h"
#include "text/unicode.h"

namespace omniflux::text {

const char* const kQwen2PretokenizeRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

// GPT-2's regex, which ByteLevel(use_regex = true) applies.
const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string quote_literal(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

struct ByteLevelBpeTokenizer::Impl {
  struct Step {
    std::unique_ptr<detail::Regex> regex;
    detail::SplitRule rule;
  };
  std::unique_ptr<detail::BpeModel> model;
  bool nfc = false;
  std::vector<Step> steps;
  std::vector<AddedToken> added;
  detail::AddedTokenMatcher matcher;
  std::unordered_map<int64_t, size_t> added_by_id;
  std::unordered_map<std::string, int64_t> added_by_content;
  std::vector<int64_t> prefix, suffix;
  std::optional<int64_t> pad;
  bool clean_up = false;
  int64_t size = 0;
  std::string where;

  void set_added(std::vector<AddedToken> tokens) {
    added = std::move(tokens);
    matcher = detail::AddedTokenMatcher(added);
    for (size_t i = 0; i < added.size(); ++i) {
      added_by_id.emplace(added[i].id, i);
      added_by_content.emplace(added[i].content, added[i].id);
    }
    size = model->size();
    for (const auto& t : added) size = std::max(size, t.id + 1);
  }

  std::optional<int64_t> find(std::string_view token) const {
    if (const auto it = added_by_content.find(std::string(token)); it != added_by_content.end()) return it->second;
    return model->id_of(token);
  }

  // Splits `piece` with pre-tokenizer steps [k, end) and BPE-encodes what comes out.
  void pretokenize(size_t k, std::string_view piece, std::vector<int64_t>& out, EncodeStats* stats) const {
    if (k == steps.size()) {
      if (stats) ++stats->pieces;
      model->encode_piece(piece, out, stats ? &stats->bpe_work : nullptr);
      return;
    }
    detail::split_pieces(*steps[k].regex, steps[k].rule, piece,
                         [&](std::string_view sub) { pretokenize(k + 1, sub, out, stats); });
  }
};

ByteLevelBpeTokenizer::ByteLevelBpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  added_ = impl_->added;
}
ByteLevelBpeTokenizer::~ByteLevelBpeTokenizer() = default;

namespace {

void parse_pre_tokenizer(const nlohmann::json& j, ByteLevelBpeTokenizer::Impl& impl, bool& byte_level,
                         const std::string& where) {
  if (j.is_null()) return;
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : j.at("pretokenizers")) parse_pre_tokenizer(p, impl, byte_level, where);
  } else if (type == "ByteLevel") {
    if (j.value("add_prefix_space", false)) {
      throw Error("unsupported ByteLevel option", where + ": pre_tokenizer", "add_prefix_space = false", "true");
    }
    byte_level = true;
    if (j.value("use_regex", true)) {
      impl.steps.push_back({std::make_unique<detail::Regex>(kGpt2Regex, where), {true, true}});
    }
  } else if (type == "Split") {
    const auto& pat = j.at("pattern");
    std::string pattern;
    if (pat.contains("Regex")) {
      pattern = pat["Regex"].get<std::string>();
    } else if (pat.contains("String")) {
      pattern = quote_literal(pat["String"].get<std::string>());
    } else {
      throw Error("unsupported Split pattern", where + ": pre_tokenizer", "Regex or String", pat.dump());
    }
    const std::string behavior = j.value("behavior", "");
    const bool invert = j.value("invert", false);
    detail::SplitRule rule;
    if (behavior == "Isolated") {
      rule = {true, true};
    } else if (behavior == "Removed") {
      rule = invert ? detail::SplitRule{true, false} : detail::SplitRule{false, true};
    } else {
      throw Error("unsupported Split behavior", where + ": pre_tokenizer", "Isolated or Removed", behavior);
    }
    impl.steps.push_back({std::make_unique<detail::Regex>(pattern, where + ": Split regex"), rule});
  } else {
    throw Error("unsupported pre-tokenizer", where + ": pre_tokenizer", "Sequence, Split or ByteLevel", type);
  }
}

void parse_post_processor(const nlohmann::json& j, ByteLevelBpeTokenizer::Impl& impl, const std::string& where) {
  if (j.is_null()) return;
  const std::string type = j.value("type", "");
  const auto id_of = [&](const std::string& tok) { return require_token_id(impl.find(tok), tok, where + ": post_processor"); };
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    for (const auto& p : j.at("processors")) parse_post_processor(p, impl, where);
  } else if (type == "TemplateProcessing") {
    bool seen_text = false;
    for (const auto& item : j.at("single")) {
      if (item.contains("Sequence")) {
        seen_text = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].at("id").get<std::string>();
        std::vector<int64_t> ids;
        const auto& specials = j.at("special_tokens");
        if (specials.contains(name) && specials[name].contains("ids")) {
          ids = specials[name]["ids"].get<std::vector<int64_t>>();
        } else {
          ids.push_back(id_of(name));
        }
        auto& dst = seen_text ? impl.suffix : impl.prefix;
        dst.insert(dst.end(), ids.begin(), ids.end());
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    impl.prefix.push_back(j.at("cls").at(1).get<int64_t>());
    impl.suffix.push_back(j.at("sep").at(1).get<int64_t>());
  } else {
    throw Error("unsupported post-processor", where + ": post_processor",
                "ByteLevel, TemplateProcessing, RobertaProcessing or Sequence", type);
  }
}

void apply_config(ByteLevelBpeTokenizer::Impl& impl, const detail::TokenizerConfig& cfg,
                  std::optional<size_t>& max_len) {
  if (cfg.clean_up_tokenization_spaces) impl.clean_up = *cfg.clean_up_tokenization_spaces;
  max_len = cfg.model_max_length;
  if (cfg.pad_token) {
    impl.pad = impl.find(*cfg.pad_token);
  } else if (!cfg.present) {
    impl.pad = impl.find("<|endoftext|>");  // Qwen2TokenizerFast's default pad token
  }
}

}  // namespace

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_tokenizer_json(const std::string& path) {
  return detail::byte_level_bpe_from_json(detail::read_tokenizer_json(path), path);
}

std::unique_ptr<ByteLevelBpeTokenizer> detail::byte_level_bpe_from_json(TokenizerJson tj, const std::string& path) {
  const nlohmann::json& j = tj.doc;
  using Impl = ByteLevelBpeTokenizer::Impl;
  auto impl = std::make_unique<Impl>();
  impl->where = path;
  try {
    const auto& m = j.at("model");
    const std::string type = m.value("type", "BPE");
    if (type != "BPE") throw Error("not a BPE tokenizer", path + ": model.type", "BPE", type);
    if (m.contains("dropout") && !m["dropout"].is_null()) {
      throw Error("BPE dropout is not supported for inference", path + ": model.dropout", "null", m["dropout"].dump());
    }
    if (m.value("byte_fallback", false)) {
      throw Error("byte_fallback BPE is not byte-level BPE", path + ": model.byte_fallback", "false", "true");
    }
    const std::string suffix = m.contains("end_of_word_suffix") && m["end_of_word_suffix"].is_string()
                                   ? m["end_of_word_suffix"].get<std::string>() : "";
    const std::string prefix = m.contains("continuing_subword_prefix") && m["continuing_subword_prefix"].is_string()
                                   ? m["continuing_subword_prefix"].get<std::string>() : "";
    if (!suffix.empty() || !prefix.empty()) {
      throw Error("unsupported BPE word markers (CLIP's </w> is handled by ClipTokenizer)", path + ": model",
                  "empty end_of_word_suffix and continuing_subword_prefix", "\"" + suffix + "\" / \"" + prefix + "\"");
    }
    if (!tj.vocab || !tj.merges) {
      throw Error("BPE model without vocab or merges", path + ": model", "\"vocab\": {...} and \"merges\": [...]",
                  std::string(tj.vocab ? "" : "no vocab ") + (tj.merges ? "" : "no merges"));
    }
    impl->model = std::make_unique<detail::BpeModel>(std::move(*tj.vocab), *tj.merges, "", m.value("ignore_merges", false), path);

    // Normaliser: NFC or nothing.
    const auto& norm = j.contains("normalizer") ? j["normalizer"] : nlohmann::json();
    std::vector<nlohmann::json> norms;
    if (!norm.is_null()) {
      if (norm.value("type", "") == "Sequence") {
        for (const auto& n : norm.at("normalizers")) norms.push_back(n);
      } else {
        norms.push_back(norm);
      }
    }
    for (const auto& n : norms) {
      const std::string t = n.value("type", "");
      if (t != "NFC") throw Error("unsupported normalizer", path + ": normalizer", "NFC or null", t);
      impl->nfc = true;
    }

    bool byte_level = false;
    parse_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json(), *impl, byte_level, path);
    if (!byte_level) {
      throw Error("not a byte-level BPE tokenizer", path + ": pre_tokenizer", "a ByteLevel pre-tokenizer", "none");
    }
    if (j.contains("decoder") && !j["decoder"].is_null() && j["decoder"].value("type", "") != "ByteLevel") {
      throw Error("unsupported decoder", path + ": decoder", "ByteLevel", j["decoder"].value("type", ""));
    }

    std::vector<AddedToken> added;
    if (j.contains("added_tokens")) {
      for (const auto& t : j["added_tokens"]) added.push_back(detail::parse_added_token(t, path + ": added_tokens"));
    }
    impl->set_added(std::move(added));
    parse_post_processor(j.contains("post_processor") ? j["post_processor"] : nlohmann::json(), *impl, path);
  } catch (const nlohmann::json::exception& e) {
    throw Error("malformed tokenizer.json", path, "the Hugging Face tokenizers format", e.what());
  }
  std::optional<size_t> max_len;
  apply_config(*impl, detail::read_tokenizer_config(detail::parent_dir(path)), max_len);
  auto tok = std::make_unique<ByteLevelBpeTokenizer>(std::move(impl));
  tok->set_model_max_length(max_len);
  return tok;
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_vocab_merges(const std::string& dir) {
  const std::string vocab_path = detail::join_path(dir, "vocab.json");
  const std::string merges_path = detail::join_path(dir, "merges.txt");
  auto impl = std::make_unique<Impl>();
  impl->where = dir;
  impl->model = std::make_unique<detail::BpeModel>(detail::read_vocab_json(vocab_path),
                                                   detail::read_merges_txt(merges_path, 0), "", false, dir);
  impl->nfc = true;
  impl->steps.push_back({std::make_unique<detail::Regex>(kQwen2PretokenizeRegex, dir), {true, true}});
  const detail::TokenizerConfig cfg = detail::read_tokenizer_config(dir);
  impl->set_added(cfg.added_tokens);
  std::optional<size_t> max_len;
  apply_config(*impl, cfg, max_len);
  auto tok = std::make_unique<ByteLevelBpeTokenizer>(std::move(impl));
  tok->set_model_max_length(max_len);
  return tok;
}

std::vector<int64_t> ByteLevelBpeTokenizer::encode_text(std::string_view text, const EncodeOptions& o) const {
  EncodeStats* stats = o.stats;
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->matcher.split(
      text,
      [&](std::string_view seg) {
        if (stats) ++stats->segments;
        if (impl_->nfc && !detail::is_ascii(seg)) {
          const std::string normalized = detail::nfc(seg);
          impl_->pretokenize(0, normalized, ids, stats);
        } else {
          impl_->pretokenize(0, seg, ids, stats);
        }
      },
      [&](size_t idx) {
        if (stats) ++stats->added_tokens;
        ids.push_back(impl_->added[idx].id);
      },
      o.literal_spans);
  return ids;
}

std::vector<int64_t> ByteLevelBpeTokenizer::prefix_tokens() const { return impl_->prefix; }
std::vector<int64_t> ByteLevelBpeTokenizer::suffix_tokens() const { return impl_->suffix; }

std::string ByteLevelBpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (const int64_t id : ids) {
    const std::string* token = nullptr;
    if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
      const AddedToken& t = impl_->added[it->second];
      if (skip_special_tokens && t.special) continue;
      token = &t.content;
    } else {
      token = impl_->model->token_of(id);
    }
    if (!token) {
      throw Error("unknown token id", impl_->where + ": decode", "an id in [0, " + std::to_string(vocab_size()) + ")",
                  std::to_string(id));
    }
    // As Hugging Face's ByteLevel decoder: a token made only of byte-alphabet characters becomes
    // those bytes; any other token (an added token such as "<|im_start|>" is both) stays as is.
    std::string mapped;
    bool all_mapped = true;
    for (size_t i = 0; i < token->size();) {
      const int b = detail::unicode_to_byte(detail::next_code_point(*token, i));
      if (b < 0) {
        all_mapped = false;
        break;
      }
      mapped += static_cast<char>(b);
    }
    bytes += all_mapped ? mapped : *token;
  }
  std::string out = detail::utf8_lossy(bytes);
  return impl_->clean_up ? detail::clean_up_tokenization(std::move(out)) : out;
}

std::string ByteLevelBpeTokenizer::id_to_token(int64_t id) const {
  if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (const std::string* t = impl_->model->token_of(id)) return *t;
  throw Error("unknown token id", impl_->where + ": id_to_token", "an id in [0, " + std::to_string(vocab_size()) + ")",
              std::to_string(id));
}

std::optional<int64_t> ByteLevelBpeTokenizer::token_to_id(std::string_view token) const { return impl_->find(token); }

int64_t ByteLevelBpeTokenizer::vocab_size() const { return impl_->size; }

std::optional<int64_t> ByteLevelBpeTokenizer::pad_id() const { return impl_->pad; }

}  // namespace omniflux::text
