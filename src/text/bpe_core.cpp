#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/bpe_core.h"

#include <algorithm>
#include <queue>

#include <pcre2.h>

#include "omniflux/error.h"
#include "text/unicode.h"

namespace omniflux::text::detail {

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet

const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

int unicode_to_byte(char32_t cp) {
  static const std::array<int16_t, 0x180> inverse = [] {
    std::array<int16_t, 0x180> t{};
    t.fill(-1);
    const auto& fwd = byte_to_unicode();
    for (int b = 0; b < 256; ++b) t[fwd[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  const auto& fwd = byte_to_unicode();
  std::string s;
  s.reserve(bytes.size() * 2);
  for (const char c : bytes) append_utf8(s, fwd[static_cast<unsigned char>(c)]);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Regex

namespace {

// Oniguruma's and Python regex's \s (Unicode White_Space) spelled for PCRE2.
constexpr const char* kSpaceClassBody = "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}";

std::string rewrite_pattern(const std::string& p, const std::string& where) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  size_t class_start = 0;  // index in p just after '[' or '[^'
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's') {
        out += in_class ? std::string(kSpaceClassBody) : "[" + std::string(kSpaceClassBody) + "]";
      } else if (e == 'S') {
        if (in_class) {
          throw Error("unsupported \\S inside a character class in a pre-tokenizer regex", where,
                      "a pattern without [...\\S...]", p);
        }
        out += "[^" + std::string(kSpaceClassBody) + "]";
      } else {
        out += c;
        out += e;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out += '^';
        ++i;
      }
      class_start = i + 1;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:name:]
        const size_t end = p.find(":]", i + 2);
        if (end != std::string::npos) {
          out.append(p, i, end + 2 - i);
          i = end + 1;
          continue;
        }
      }
      if (c == ']' && i != class_start) in_class = false;  // a ']' first in a class is literal
    }
    out += c;
  }
  return out;
}

// One JIT stack and match context per thread, grown on demand up to 16 MiB (a match that needs
// more falls back to the interpreter, which uses the heap).
struct JitScratch {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  JitScratch() {
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~JitScratch() {
    if (stack) pcre2_jit_stack_free(stack);
    if (context) pcre2_match_context_free(context);
  }
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof(buf));
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buf));
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) : where_(where) {
  const std::string p = rewrite_pattern(pattern, where);
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(), PCRE2_UTF | PCRE2_UCP,
                                   &err, &err_off, nullptr);
  if (!code) {
    throw Error("pre-tokenizer regex does not compile", where, "a valid PCRE2 pattern",
                pcre2_message(err) + " at offset " + std::to_string(err_off) + " of " + p);
  }
  code_ = code;
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // when JIT is unavailable pcre2_match interprets
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void Regex::for_each_match(std::string_view text, const std::function<void(size_t, size_t)>& fn) const {
  thread_local JitScratch scratch;
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(pcre2_match_data_create(1, nullptr),
                                                                     pcre2_match_data_free);
  if (!md) throw Error("out of memory", where_ + ": regex match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t off = 0;
  while (off < n) {
    // NO_UTF_CHECK: the caller validated the text; without it PCRE2 re-checks the whole rest of
    // the subject on every call, which is quadratic.
    int rc = pcre2_match(code, subject, n, off, PCRE2_NO_UTF_CHECK, md.get(), scratch.context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.get(), scratch.context);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      throw Error("pre-tokenizer regex failed", where_, "a match or no match",
                  pcre2_message(rc) + " at offset " + std::to_string(off));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (e <= b) {  // empty match: step over one code point
      off = b + 1;
      while (off < n && (static_cast<unsigned char>(text[off]) & 0xC0) == 0x80) ++off;
      continue;
    }
    fn(b, e);
    off = e;
  }
}

void split_pieces(const Regex& re, const SplitRule& rule, std::string_view text,
                  const std::function<void(std::string_view)>& fn) {
  size_t last = 0;
  re.for_each_match(text, [&](size_t b, size_t e) {
    if (b > last && rule.keep_gaps) fn(text.substr(last, b - last));
    if (rule.keep_matches) fn(text.substr(b, e - b));
    last = e;
  });
  if (last < text.size() && rule.keep_gaps) fn(text.substr(last));
}

// ---------------------------------------------------------------------------------------------
// Added tokens

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
  node_token_.push_back(-1);  // root
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& s = tokens_[t].content;
    if (s.empty()) continue;
    int32_t node = 0;
    for (const char ch : s) {
      const auto b = static_cast<unsigned char>(ch);
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | b;
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        const auto next = static_cast<int32_t>(node_token_.size());
        node_token_.push_back(-1);
        it = edges_.emplace(key, next).first;
      }
      node = it->second;
    }
    if (node_token_[node] < 0) node_token_[node] = static_cast<int32_t>(t);  // first one wins
    first_byte_[static_cast<unsigned char>(s[0])] = true;
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char b) const {
  const auto it = edges_.find((static_cast<uint64_t>(node) << 8) | b);
  return it == edges_.end() ? -1 : it->second;
}

void AddedTokenMatcher::split(std::string_view text, const std::function<void(std::string_view)>& on_text,
                              const std::function<void(size_t)>& on_token, const std::vector<TextSpan>& literal) const {
  const size_t n = text.size();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  size_t seg = 0;  // start of the pending text stretch
  size_t i = 0;
  size_t lit = 0;  // first literal span that ends after i
  while (i < n) {
    while (lit < literal.size() && literal[lit].end <= i) ++lit;
    if (!first_byte_[p[i]] || (lit < literal.size() && literal[lit].begin <= i)) {
      ++i;
      continue;
    }
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t j = i; j < n; ++j) {
      node = child(node, p[j]);
      if (node < 0) break;
      if (node_token_[node] >= 0) {
        best = node_token_[node];
        best_end = j + 1;
      }
    }
    // A match reaching into user text is no match: the literal text stays text.
    if (best < 0 || (lit < literal.size() && literal[lit].begin < best_end)) {
      ++i;
      continue;
    }
    size_t s = i, e = best_end;
    const AddedToken& tok = tokens_[best];
    if (tok.lstrip) {
      while (s > seg) {
        size_t k = s - 1;
        while (k > seg && (p[k] & 0xC0) == 0x80) --k;
        size_t kk = k;
        if (!is_white_space(next_code_point(text, kk))) break;
        s = k;
      }
    }
    if (tok.rstrip) {
      while (e < n) {
        size_t k = e;
        if (!is_white_space(next_code_point(text, k))) break;
        e = k;
      }
    }
    if (s > seg) on_text(text.substr(seg, s - seg));
    on_token(static_cast<size_t>(best));
    seg = i = e;
  }
  if (seg < n) on_text(text.substr(seg));
}

// ---------------------------------------------------------------------------------------------
// BPE

namespace {

constexpr uint64_t kEmptyKey = ~0ULL;

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

size_t slot_of(uint64_t key, int bits) { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> (64 - bits)); }

int bits_for(size_t n) {  // a power of two at least twice n
  int bits = 4;
  while ((size_t{1} << bits) < 2 * n) ++bits;
  return bits;
}

}  // namespace

BpeModel::BpeModel(std::vector<std::pair<std::string, int64_t>> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, std::string suffix,
                   bool ignore_merges, const std::string& where)
    : suffix_(std::move(suffix)), ignore_merges_(ignore_merges) {
  int64_t max_id = -1;
  for (const auto& [tok, id] : vocab) {
    if (id < 0 || id > INT32_MAX) throw Error("vocabulary id out of range", where + ": \"" + tok + "\"", "0..2^31-1", std::to_string(id));
    max_id = std::max(max_id, id);
  }
  if (static_cast<uint64_t>(max_id) >= 2 * vocab.size() + 65536) {
    throw Error("vocabulary ids are too sparse", where, "ids below " + std::to_string(2 * vocab.size() + 65536),
                "largest id " + std::to_string(max_id));
  }
  tokens_.resize(static_cast<size_t>(max_id + 1));
  present_.assign(tokens_.size(), 0);
  const int token_bits = bits_for(vocab.size());
  token_slots_.assign(size_t{1} << token_bits, -1);
  const size_t token_mask = token_slots_.size() - 1;
  for (auto& [tok, id] : vocab) {
    size_t h = std::hash<std::string_view>()(tok) & token_mask;
    while (token_slots_[h] >= 0 && tokens_[token_slots_[h]] != tok) h = (h + 1) & token_mask;
    // A repeated token keeps its last id, as a JSON object would; the earlier id keeps its text.
    token_slots_[h] = static_cast<int32_t>(id);
    if (!present_[id] || tok < tokens_[id]) tokens_[id] = std::move(tok);  // two texts, one id: deterministic
    present_[id] = 1;
  }
  const auto lookup = [&](const std::string& tok, const std::string& what) -> int32_t {
    const int32_t id = find(tok);
    if (id < 0) throw Error("token missing from the vocabulary", where + ": " + what, "\"" + tok + "\" in vocab", "no such token");
    return id;
  };
  const auto& fwd = byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, fwd[b]);
    byte_id_[b] = lookup(s, "byte-level alphabet (byte " + std::to_string(b) + ")");
    byte_suffix_id_[b] = suffix_.empty() ? byte_id_[b] : lookup(s + suffix_, "byte-level alphabet with end-of-word suffix");
  }
  merge_bits_ = bits_for(merges.size());
  merge_slots_.assign(size_t{1} << merge_bits_, {kEmptyKey, Merge{0, 0}});
  const size_t merge_mask = merge_slots_.size() - 1;
  std::string ab;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    ab.assign(a).append(b);
    const int32_t ia = find(a), ib = find(b), im = find(ab);
    if (ia < 0 || ib < 0 || im < 0) {  // Hugging Face refuses such merges too
      const std::string line = "merge " + std::to_string(r) + " \"" + a + " " + b + "\"";
      lookup(a, line);
      lookup(b, line);
      lookup(ab, line);
    }
    const uint64_t key = pair_key(ia, ib);
    size_t h = slot_of(key, merge_bits_);
    while (merge_slots_[h].first != kEmptyKey && merge_slots_[h].first != key) h = (h + 1) & merge_mask;
    if (merge_slots_[h].first == kEmptyKey) merge_slots_[h] = {key, Merge{static_cast<int32_t>(r), im}};
    // else: a repeated pair keeps its first (lowest) rank
  }
}

int32_t BpeModel::find(std::string_view token) const {
  const size_t mask = token_slots_.size() - 1;
  for (size_t h = std::hash<std::string_view>()(token) & mask;; h = (h + 1) & mask) {
    const int32_t id = token_slots_[h];
    if (id < 0) return -1;
    if (tokens_[id] == token) return id;
  }
}

const BpeModel::Merge* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  const size_t mask = merge_slots_.size() - 1;
  for (size_t h = slot_of(key, merge_bits_);; h = (h + 1) & mask) {
    const auto& slot = merge_slots_[h];
    if (slot.first == key) return &slot.second;
    if (slot.first == kEmptyKey) return nullptr;
  }
}

void BpeModel::merge(std::vector<int32_t>& sym, size_t* work) const {
  const size_t n = sym.size();
  const auto rank_of = [&](int32_t a, int32_t b) { return find_merge(a, b); };
  if (n <= 24) {
    // Short pieces: scan for the lowest-ranked pair (leftmost on ties), merge, repeat.
    size_t steps = 0;
    while (sym.size() > 1) {
      const Merge* best = nullptr;
      size_t at = 0;
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        const Merge* m = rank_of(sym[i], sym[i + 1]);
        if (m && (!best || m->rank < best->rank)) {
          best = m;
          at = i;
        }
      }
      steps += sym.size();
      if (!best) break;
      sym[at] = best->merged;
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    if (work) *work += steps;
    return;
  }
  // Long pieces: a doubly linked list of symbols and a min-queue of candidate pairs ordered by
  // (rank, position), which is the same order as the scan above but O(n log n). Queue entries
  // that no longer describe two adjacent live symbols are skipped when popped.
  struct Entry {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<int32_t> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  std::vector<Entry> storage;
  storage.reserve(n);
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue(std::greater<Entry>(), std::move(storage));
  size_t ops = n;
  const auto push = [&](int32_t pos) {
    const int32_t r = next[pos];
    if (r < 0) return;
    if (const Merge* m = rank_of(sym[pos], sym[r])) {
      queue.push(Entry{m->rank, pos, sym[pos], sym[r], m->merged});
      ++ops;
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!queue.empty()) {
    const Entry e = queue.top();
    queue.pop();
    ++ops;
    if (!alive[e.pos] || sym[e.pos] != e.left) continue;
    const int32_t r = next[e.pos];
    if (r < 0 || sym[r] != e.right) continue;
    sym[e.pos] = e.merged;
    alive[r] = 0;
    next[e.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = e.pos;
    if (prev[e.pos] >= 0) push(prev[e.pos]);
    push(e.pos);
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) sym[w++] = sym[i];
  sym.resize(w);
  if (work) *work += ops;
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int64_t>& out, size_t* work) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    // Models with ignore_merges take a whole piece that is itself a token as is.
    if (const int32_t id = find(bytes_to_byte_level(piece) + suffix_); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  constexpr size_t kCacheMaxPiece = 64, kCacheMaxEntries = 200000;
  const bool cacheable = piece.size() <= kCacheMaxPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(std::string(piece));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      if (work) ++*work;
      return;
    }
  }
  std::vector<int32_t> sym(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) sym[i] = byte_id_[static_cast<unsigned char>(piece[i])];
  sym.back() = byte_suffix_id_[static_cast<unsigned char>(piece.back())];
  merge(sym, work);
  out.insert(out.end(), sym.begin(), sym.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();
    cache_.emplace(std::string(piece), std::move(sym));
  }
}

}  // namespace omniflux::text::detail
