// Language models: cached decoding against full-sequence forwards (teacher forcing), left-padded
// batches against single rows, the KV cache's checks, and loaders rejecting bad folders.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/qwen2.h"
#include "omniflux/models/xomni_lm.h"
#include "nn/kv_cache.h"
#include "test_util.h"
#include "tiny_tokenizer.h"

using namespace omniflux;
namespace fs = std::filesystem;

namespace {
double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Copies a fixture folder's files into `dir`, optionally replacing config.json's text.
void copy_fixture(const std::string& name, const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(fixture(name))) fs::copy(e.path(), dir / e.path().filename());
}
void replace_in_file(const fs::path& p, const std::string& from, const std::string& to) {
  std::ifstream in(p);
  std::string s((std::istreambuf_iterator<char>(in)), {});
  const auto pos = s.find(from);
  ASSERT_NE(pos, std::string::npos) << from;
  s.replace(pos, from.size(), to);
  std::ofstream(p) << s;
}
}  // namespace

TEST(KVCache, ChecksCapacityShapesAndPadding) {
  nn::KVCache c(2, 1, 2, 4, 8, at::kFloat);
  EXPECT_THROW(c.begin_step(5), Error);
  c.begin_step(3);
  EXPECT_THROW(c.write(0, at::zeros({1, 2, 2, 8}), at::zeros({1, 2, 2, 8})), Error);  // wrong S
  EXPECT_THROW(c.write(2, at::zeros({1, 2, 3, 8}), at::zeros({1, 2, 3, 8})), Error);  // no layer 2
  auto kv = c.write(0, at::ones({1, 2, 3, 8}), at::ones({1, 2, 3, 8}));
  EXPECT_EQ(kv.first.size(2), 3);
  c.end_step();
  EXPECT_EQ(c.length(), 3);
  EXPECT_THROW(c.begin_step(2), Error);  // 3 + 2 > 4
  c.begin_step(1);
  EXPECT_TRUE(at::equal(c.positions(), at::full({1, 1}, 3, at::kLong)));
  c.end_step();
  EXPECT_THROW(nn::KVCache(1, 1, 1, 0, 8, at::kFloat), Error);

  nn::KVCache p(1, 2, 1, 8, 4, at::kFloat);
  EXPECT_THROW(p.begin_step(3, at::tensor({1, 1, 0, 1, 1, 1}, at::kLong).view({2, 3})), Error);  // right pad
  const nn::AttentionOptions o = p.begin_step(3, at::tensor({0, 1, 1, 1, 1, 1}, at::kLong).view({2, 3}));
  // Row 0 has one pad: its real tokens get positions 0, 1 (HF cumsum(mask) - 1).
  EXPECT_TRUE(at::equal(p.positions(), at::tensor({-1, 0, 1, 0, 1, 2}, at::kLong).view({2, 3})));
  // The pads reach attention as per-row key starts, not as a key mask.
  EXPECT_EQ(o.key_start, (std::vector<int64_t>{1, 0}));
  EXPECT_FALSE(o.mask.defined());
}

TEST(Qwen2, TeacherForcedCachedLogitsMatchFullSequence) {
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"));
  at::manual_seed(3);
  at::Tensor ids = at::randint(0, lm.config().vocab_size, {2, 14}, at::kLong);
  at::Tensor full = lm.forward(ids);  // [2, 14, V]
  // Prefill 5 tokens, a chunk of 4, then one token per step.
  auto cache = lm.new_cache(2, 14);
  std::vector<at::Tensor> got = {lm.prefill(ids.slice(1, 0, 5), cache, {}, 0),
                                 lm.prefill(ids.slice(1, 5, 9), cache, {}, 0)};
  for (int64_t i = 9; i < 14; ++i) got.push_back(lm.decode_one(ids.select(1, i), cache).unsqueeze(1));
  EXPECT_LT(max_abs(at::cat(got, 1), full), 1e-4);
  EXPECT_THROW(lm.decode_one(ids.select(1, 0), cache), Error);  // the cache is full
}

TEST(Qwen2, LeftPaddedRowMatchesUnpaddedForward) {
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"));
  at::manual_seed(4);
  at::Tensor a = at::randint(0, 512, {1, 9}, at::kLong), b = at::randint(0, 512, {1, 6}, at::kLong);
  at::Tensor batch = at::cat({a, at::cat({at::full({1, 3}, 7, at::kLong), b}, 1)});
  at::Tensor mask = at::ones({2, 9}, at::kLong);
  mask[1].slice(0, 0, 3).zero_();
  auto cache = lm.new_cache(2, 12);
  at::Tensor got = lm.prefill(batch, cache, mask, 0);
  EXPECT_LT(max_abs(got[0], lm.forward(a)[0]), 1e-4);
  EXPECT_LT(max_abs(got[1].slice(0, 3), lm.forward(b)[0]), 1e-4);
  EXPECT_FALSE(at::isnan(got).any().item<bool>());  // pad queries stay finite
  // Decoding continues both rows at their own positions.
  at::Tensor next = at::tensor({11, 12}, at::kLong);
  at::Tensor step = lm.decode_one(next, cache);
  EXPECT_LT(max_abs(step[0], lm.forward(at::cat({a, next.slice(0, 0, 1).unsqueeze(0)}, 1))[0][-1]), 1e-4);
  EXPECT_LT(max_abs(step[1], lm.forward(at::cat({b, next.slice(0, 1, 2).unsqueeze(0)}, 1))[0][-1]), 1e-4);
}

TEST(Qwen2, LeftPaddedCfgPairDecodesAsEachRowAlone) {
  // The CFG pair X-Omni runs (a prompt and a shorter negative prompt, left-padded into one batch):
  // 12 greedy tokens per row through the padded cache equal each row decoded alone, token for token,
  // with logits within 1e-4. The padded rows attend their own keys only (no key mask).
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"));
  at::manual_seed(8);
  const at::Tensor a = at::randint(0, 512, {1, 11}, at::kLong), b = at::randint(0, 512, {1, 4}, at::kLong);
  const at::Tensor batch = at::cat({a, at::cat({at::zeros({1, 7}, at::kLong), b}, 1)});
  at::Tensor mask = at::ones({2, 11}, at::kLong);
  mask[1].slice(0, 0, 7).zero_();
  const int64_t n = 12;
  auto pair_cache = lm.new_cache(2, 11 + n);
  at::Tensor next = lm.prefill(batch, pair_cache, mask).squeeze(1).argmax(-1);
  std::vector<at::Tensor> pair_logits;
  std::vector<int64_t> pair_tokens;
  for (int64_t i = 0; i < n; ++i) {
    pair_tokens.push_back(next[0].item<int64_t>());
    pair_tokens.push_back(next[1].item<int64_t>());
    const at::Tensor l = lm.decode_one(next, pair_cache);
    pair_logits.push_back(l);
    next = l.argmax(-1);
  }
  for (int64_t r = 0; r < 2; ++r) {
    SCOPED_TRACE(r == 0 ? "prompt row" : "negative row");
    const at::Tensor ids = r == 0 ? a : b;
    auto cache = lm.new_cache(1, ids.size(1) + n);
    at::Tensor t = lm.prefill(ids, cache).squeeze(1).argmax(-1);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(t.item<int64_t>(), pair_tokens[2 * i + r]) << "token " << i;
      const at::Tensor l = lm.decode_one(t, cache);
      EXPECT_LT(max_abs(l[0], pair_logits[i][r]), 1e-4) << "step " << i;
      t = l.argmax(-1);
    }
  }
}

TEST(Qwen2, FixedShapeDecodeEqualsGrowingDecodeTokenForToken) {
  // Decode over bucketed key lengths (8) with the tail masked on the device, the positions and the
  // write slot from the device length, against the ordinary growing views: the same greedy tokens
  // and logits within 1e-4, for one row and for a left-padded CFG pair, across bucket edges and the
  // capacity cap (a 31-token cache: views of 16, 24 and 31 keys).
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"));
  at::manual_seed(9);
  const at::Tensor a = at::randint(0, 512, {1, 11}, at::kLong), b = at::randint(0, 512, {1, 4}, at::kLong);
  at::Tensor pair_mask = at::ones({2, 11}, at::kLong);
  pair_mask[1].slice(0, 0, 7).zero_();
  const at::Tensor pair = at::cat({a, at::cat({at::zeros({1, 7}, at::kLong), b}, 1)});
  const int64_t n = 20;
  for (const bool cfg : {false, true}) {
    SCOPED_TRACE(cfg ? "CFG pair" : "one row");
    const at::Tensor ids = cfg ? pair : a, mask = cfg ? pair_mask : at::Tensor();
    auto growing = lm.new_cache(ids.size(0), 11 + n), fixed = lm.new_cache(ids.size(0), 11 + n);
    at::Tensor t1 = lm.prefill(ids, growing, mask).squeeze(1).argmax(-1);
    at::Tensor t2 = lm.prefill(ids, fixed, mask).squeeze(1).argmax(-1);
    fixed.use_fixed_shapes(8);
    std::vector<int64_t> views;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(at::equal(t1, t2)) << "token " << i;
      const at::Tensor l1 = lm.decode_one(t1, growing), l2 = lm.decode_one(t2, fixed);
      views.push_back(fixed.view_length());
      EXPECT_LT(max_abs(l1, l2), 1e-4) << "step " << i;
      t1 = l1.argmax(-1);
      t2 = l2.argmax(-1);
    }
    EXPECT_EQ(growing.length(), fixed.length());
    EXPECT_EQ(views.front(), 16);
    EXPECT_EQ(views.back(), 31);
    EXPECT_EQ(std::count(views.begin(), views.end(), 24), 8);
  }
  nn::KVCache c(1, 1, 1, 4, 8, at::kFloat);
  EXPECT_THROW(c.use_fixed_shapes(0), Error);
}

TEST(Qwen2, RejectsBadIdsAndBadFolders) {
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"));
  EXPECT_THROW(lm.forward(at::full({1, 3}, 512, at::kLong)), Error);
  EXPECT_THROW(lm.forward(at::full({1, 3}, -1, at::kLong)), Error);
  EXPECT_THROW(lm.forward(at::zeros({3}, at::kLong)), Error);
  EXPECT_THROW(lm.forward(at::zeros({1, 3}, at::kFloat)), Error);
  auto cache = lm.new_cache(1, 4);
  EXPECT_THROW(lm.prefill(at::zeros({2, 2}, at::kLong), cache), Error);  // batch differs
  EXPECT_THROW(Qwen2ForCausalLM::load("/nonexistent/qwen2"), Error);
  {
    TempDir d;  // untied config: the file has no lm_head.weight
    copy_fixture("qwen2_lm", d.path());
    replace_in_file(d.path() / "config.json", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    try {
      Qwen2ForCausalLM::load(d.path().string());
      FAIL() << "expected an Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("lm_head.weight"), std::string::npos) << e.what();
    }
  }
  {
    TempDir d;  // one layer more in the config than in the file
    copy_fixture("qwen2_lm", d.path());
    replace_in_file(d.path() / "config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    EXPECT_THROW(Qwen2ForCausalLM::load(d.path().string()), Error);
  }
  {
    TempDir d;  // one layer fewer: the file's extra layer is an unused key
    copy_fixture("qwen2_lm", d.path());
    replace_in_file(d.path() / "config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    EXPECT_THROW(Qwen2ForCausalLM::load(d.path().string()), Error);
  }
}

TEST(XOmniLM, TeacherForcedCachedLogitsMatchFullSequenceInBothModes) {
  auto lm = XOmniLM::load(fixture("xomni_lm"));
  const int64_t V = lm.config().text.vocab_size, K = lm.config().image_vocab_size;
  at::manual_seed(5);
  // text prefix, then image codes
  at::Tensor ids = at::cat({at::randint(0, V, {1, 7}, at::kLong), V + at::randint(0, K, {1, 9}, at::kLong)}, 1);
  for (auto mode : {XOmniMode::Text, XOmniMode::Image}) {
    auto full_cache = lm.new_cache(1, 16);
    at::Tensor full = lm.prefill(ids, full_cache, mode, {}, 0);
    auto cache = lm.new_cache(1, 16);
    std::vector<at::Tensor> got = {lm.prefill(ids.slice(1, 0, 8), cache, mode, {}, 0)};
    for (int64_t i = 8; i < 16; ++i) got.push_back(lm.decode_one(ids.select(1, i), cache, mode).unsqueeze(1));
    EXPECT_LT(max_abs(at::cat(got, 1), full), 1e-4);
    EXPECT_EQ(full.size(2), mode == XOmniMode::Text ? V : K);
  }
}

TEST(XOmniLM, RoutedLayersLeaveTextPositionsAlone) {
  // A text-only sequence must give the same text logits whatever image tokens follow it.
  auto lm = XOmniLM::load(fixture("xomni_lm"));
  const int64_t V = lm.config().text.vocab_size;
  at::Tensor text = at::arange(5, 11, at::kLong).unsqueeze(0);
  auto c1 = lm.new_cache(1, 6), c2 = lm.new_cache(1, 9);
  at::Tensor a = lm.prefill(text, c1, XOmniMode::Text, {}, 0);
  at::Tensor b = lm.prefill(at::cat({text, at::tensor({V, V + 3, V + 1}, at::kLong).unsqueeze(0)}, 1), c2,
                            XOmniMode::Text, {}, 0);
  EXPECT_LT(max_abs(a, b.slice(1, 0, 6)), 1e-5);
  EXPECT_TRUE(lm.config().routed(0));
  EXPECT_FALSE(lm.config().routed(1));
  EXPECT_TRUE(lm.config().routed(lm.config().text.num_hidden_layers - 1));
}

TEST(XOmniLM, ImageCodeGenerationIsReproducibleAndInRange) {
  auto lm = XOmniLM::load(fixture("xomni_lm"));
  at::Tensor prompt = at::arange(1, 11, at::kLong).unsqueeze(0), neg = at::arange(8, 11, at::kLong).unsqueeze(0);
  XOmniLM::ImageGeneration g;
  g.sampling.seed = 1234;
  g.guidance_scale = 3.0;
  at::Tensor a = lm.generate_image_codes(prompt, neg, 12, g), b = lm.generate_image_codes(prompt, neg, 12, g);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{1, 12}));
  EXPECT_GE(a.min().item<int64_t>(), 0);
  EXPECT_LT(a.max().item<int64_t>(), lm.config().image_vocab_size);
  g.sampling.seed = 99;
  EXPECT_FALSE(at::equal(a, lm.generate_image_codes(prompt, neg, 12, g)));
  g.guidance_scale = 1.0;
  EXPECT_EQ(lm.generate_image_codes(prompt, {}, 5, g).size(1), 5);
  EXPECT_THROW(lm.generate_image_codes(prompt, {}, 0, g), Error);
  EXPECT_THROW(lm.generate_image_codes(at::full({1, 2}, 10000, at::kLong), {}, 3, g), Error);
}

TEST(XOmniLM, CfgRowsLeftPadTheShorterRowAndRefuseOtherShapes) {
  auto lm = XOmniLM::load(fixture("xomni_lm"));
  const at::Tensor prompt = at::tensor({5, 6, 7, 8}, at::kLong).unsqueeze(0), neg = at::tensor({9, 10}, at::kLong).unsqueeze(0);
  const auto [ids, mask] = lm.cfg_rows(prompt, neg);
  EXPECT_TRUE(at::equal(ids, at::tensor({5, 6, 7, 8, 0, 0, 9, 10}, at::kLong).view({2, 4})));
  EXPECT_TRUE(at::equal(mask, at::tensor({1, 1, 1, 1, 0, 0, 1, 1}, at::kLong).view({2, 4})));
  const auto [ids2, mask2] = lm.cfg_rows(neg, prompt);  // the shorter row may be either
  EXPECT_TRUE(at::equal(ids2, at::tensor({0, 0, 9, 10, 5, 6, 7, 8}, at::kLong).view({2, 4})));
  EXPECT_THROW(lm.cfg_rows(prompt, at::Tensor()), Error);
  EXPECT_THROW(lm.cfg_rows(at::zeros({2, 3}, at::kLong), neg), Error);
  EXPECT_THROW(lm.cfg_rows(prompt, at::zeros({1, 0}, at::kLong)), Error);
  EXPECT_THROW(lm.cfg_rows(at::zeros({4}, at::kLong), neg), Error);
}

TEST(XOmniLM, ImageCodeGenerationCancelsWithinOneCode) {
  auto lm = XOmniLM::load(fixture("xomni_lm"));
  at::Tensor prompt = at::arange(1, 11, at::kLong).unsqueeze(0), neg = at::arange(8, 11, at::kLong).unsqueeze(0);
  XOmniLM::ImageGeneration g;
  g.sampling.seed = 1234;
  g.guidance_scale = 3.0;
  const at::Tensor all = lm.generate_image_codes(prompt, neg, 12, g);
  int64_t calls = 0, total = 0;
  g.progress = [&](const std::string& stage, int64_t done, int64_t t) {
    EXPECT_EQ(stage, "tokens");
    ++calls;
    total = t;
    return done < 4;
  };
  at::Tensor part = lm.generate_image_codes(prompt, neg, 12, g);
  EXPECT_EQ(calls, 4);  // not called again after it said stop
  EXPECT_EQ(total, 12);
  ASSERT_EQ(part.sizes(), (std::vector<int64_t>{1, 4}));
  EXPECT_TRUE(at::equal(part, all.slice(1, 0, 4)));  // the same codes up to the cancel
}

TEST(XOmniLM, ChecksImageCodeIdsAgainstTheTokenizer) {
  const int64_t V = 300;
  auto mm_tokens = [](int64_t first_id) {
    return std::vector<std::pair<std::string, int64_t>>{
        {"<MM-Token-0>", first_id}, {"<MM-Token-1>", first_id + 1}, {"<MM-Token-63>", first_id + 63}};
  };
  {
    TempDir d;
    copy_fixture("xomni_lm", d.path());
    write_tiny_tokenizer((d.path() / "tokenizer.json").string(), V, mm_tokens(V));
    EXPECT_NO_THROW(XOmniLM::load(d.path().string()));
  }
  {
    TempDir d;
    copy_fixture("xomni_lm", d.path());
    write_tiny_tokenizer((d.path() / "tokenizer.json").string(), V + 3, mm_tokens(V + 3));  // "<MM-Token-0>" != vocab_size
    try {
      XOmniLM::load(d.path().string());
      FAIL() << "expected an Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("<MM-Token-0>"), std::string::npos) << e.what();
    }
  }
  {
    TempDir d;  // the plain Qwen2 tokenizer has no image-code tokens at all
    copy_fixture("xomni_lm", d.path());
    fs::copy(fixture("tokenizers/qwen2/tokenizer.json"), d.path() / "tokenizer.json");
    EXPECT_THROW(XOmniLM::load(d.path().string()), Error);
  }
  {
    TempDir d;  // adapter + head layers exceed the stack
    copy_fixture("xomni_lm", d.path());
    replace_in_file(d.path() / "config.json", "\"num_mm_head_layers\": 1", "\"num_mm_head_layers\": 6");
    EXPECT_THROW(XOmniLM::load(d.path().string()), Error);
  }
}

TEST(Qwen2, LeftPaddingStaysFiniteInBfloat16) {
  // The pad mask uses bf16's own finfo.min: float's lowest would round to -inf and turn the
  // all-pad query rows into NaN.
  RuntimeOptions rt;
  rt.dtype = "bfloat16";
  auto lm = Qwen2ForCausalLM::load(fixture("qwen2_lm"), rt);
  at::Tensor ids = at::tensor({0, 0, 0, 5, 6, 7, 1, 2, 3, 4, 5, 6}, at::kLong).view({2, 6});
  at::Tensor mask = (ids != 0).to(at::kLong);
  mask[1].fill_(1);
  auto cache = lm.new_cache(2, 7);
  at::Tensor logits = lm.prefill(ids, cache, mask, 0).to(at::kFloat);
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  at::Tensor step = lm.decode_one(at::tensor({8, 9}, at::kLong), cache).to(at::kFloat);
  EXPECT_TRUE(at::isfinite(step).all().item<bool>());
  at::Tensor alone = lm.forward(ids[0].slice(0, 3).unsqueeze(0)).to(at::kFloat);
  EXPECT_LT(max_abs(logits[0].slice(0, 3), alone[0]), 1.0);
}
