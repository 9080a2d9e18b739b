// Qwen2.5-VL pieces against hand-worked values (smart_resize, window index, get_rope_index,
// patch order, M-RoPE), cached decoding against full-sequence forwards, both checkpoint layouts,
// and bad inputs.
#include <gtest/gtest.h>

#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/qwen2_5_vl.h"
#include "nn/rotary.h"
#include "nn/rotary_multimodal.h"
#include "omniflux/io/image_tensor.h"
#include "omniflux/text/tokenizer.h"
#include "test_util.h"
#include "tiny_tokenizer.h"

using namespace omniflux;
namespace fs = std::filesystem;

namespace {
at::Tensor longs(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }
at::Tensor grid(int64_t t, int64_t h, int64_t w) { return longs({t, h, w}).unsqueeze(0); }
double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }
using Size = std::pair<int64_t, int64_t>;
}  // namespace

TEST(Qwen2_5_VL, SmartResize) {
  const int64_t big = 28 * 28 * 16384;
  EXPECT_EQ(qwen2_5_vl_smart_resize(100, 150, 28, 3136, big), Size(112, 140));
  // 70 / 28 = 2.5 rounds half to even: 56, not 84.
  EXPECT_EQ(qwen2_5_vl_smart_resize(70, 70, 28, 3136, big), Size(56, 56));
  // Above max_pixels: beta = sqrt(1000 * 500 / 78400) = 2.525; floor(14.14) * 28, floor(7.07) * 28.
  EXPECT_EQ(qwen2_5_vl_smart_resize(1000, 500, 28, 3136, 78400), Size(392, 196));
  // Below min_pixels: beta = sqrt(3136 / 600) = 2.286; ceil(1.63) * 28, ceil(2.45) * 28.
  EXPECT_EQ(qwen2_5_vl_smart_resize(20, 30, 28, 3136, big), Size(56, 84));
  EXPECT_THROW(qwen2_5_vl_smart_resize(1, 201, 28, 3136, big), Error);
  EXPECT_THROW(qwen2_5_vl_smart_resize(0, 10, 28, 3136, big), Error);
}

TEST(Qwen2_5_VL, WindowIndexWorkedExamples) {
  Qwen2_5_VLVisionConfig v;  // window 112, patch 14, merge 2: windows of 4x4 merged tokens
  Qwen2_5_VLWindowIndex a = qwen2_5_vl_window_index(grid(1, 8, 12), v);
  EXPECT_TRUE(at::equal(a.window_index, longs({0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21, 4, 5, 10, 11, 16, 17, 22, 23})));
  EXPECT_TRUE(at::equal(a.cu_window_seqlens, longs({0, 64, 96})));
  EXPECT_TRUE(at::equal(qwen2_5_vl_window_index(grid(1, 16, 16), v).cu_window_seqlens, longs({0, 64, 128, 192, 256})));
  EXPECT_TRUE(at::equal(qwen2_5_vl_window_index(grid(1, 10, 10), v).cu_window_seqlens, longs({0, 64, 80, 96, 100})));
  // Two images: the second one's indices are offset by the first one's merged-token count.
  Qwen2_5_VLWindowIndex two = qwen2_5_vl_window_index(at::cat({grid(1, 4, 4), grid(1, 4, 4)}), v);
  EXPECT_TRUE(at::equal(two.window_index, longs({0, 1, 2, 3, 4, 5, 6, 7})));
  EXPECT_TRUE(at::equal(two.cu_window_seqlens, longs({0, 16, 32})));
  EXPECT_THROW(qwen2_5_vl_window_index(grid(1, 5, 4), v), Error);  // not a multiple of the merge size
}

TEST(Qwen2_5_VL, RopeIndexWorkedExample) {
  Qwen2_5_VLConfig c;
  c.vision = Qwen2_5_VLVisionConfig{};
  // 14 text tokens, <|vision_start|>, 24 image pads (grid 1x8x12), <|vision_end|>, 3 text tokens.
  std::vector<int64_t> ids(14, 10);
  ids.push_back(c.vision_start_token_id);
  ids.insert(ids.end(), 24, c.image_token_id);
  ids.push_back(151653);
  ids.insert(ids.end(), 3, 11);
  Qwen2_5_VLRopeIndex r = qwen2_5_vl_rope_index(longs(ids).unsqueeze(0), grid(1, 8, 12), c);
  auto P = r.position_ids;
  for (int64_t i = 0; i < 15; ++i)
    for (int64_t k = 0; k < 3; ++k) EXPECT_EQ(P[k][0][i].item<int64_t>(), i);
  // image token (y, x) = index 15 + 6y + x: t = 15, h = 15 + y, w = 15 + x
  EXPECT_EQ(P[0][0][15 + 6 * 3 + 5].item<int64_t>(), 15);
  EXPECT_EQ(P[1][0][15 + 6 * 3 + 5].item<int64_t>(), 18);
  EXPECT_EQ(P[2][0][15 + 6 * 3 + 5].item<int64_t>(), 20);
  for (int64_t k = 0; k < 3; ++k) EXPECT_EQ(P[k][0][39].item<int64_t>(), 21);  // <|vision_end|>
  EXPECT_EQ(r.rope_deltas.item<int64_t>(), -18);

  // Left padding: pads keep position 1, the row's positions start at 0, delta counts the pads.
  Qwen2_5_VLRopeIndex p = qwen2_5_vl_rope_index(longs({0, 0, 5, 6, 7}).unsqueeze(0), {}, c, longs({0, 0, 1, 1, 1}).unsqueeze(0));
  EXPECT_TRUE(at::equal(p.position_ids[1][0], longs({1, 1, 0, 1, 2})));
  EXPECT_EQ(p.rope_deltas.item<int64_t>(), -2);
  // More images in the prompt than grids.
  EXPECT_THROW(qwen2_5_vl_rope_index(longs(ids).unsqueeze(0), {}, c), Error);
  std::vector<int64_t> video = {c.vision_start_token_id, c.video_token_id};
  EXPECT_THROW(qwen2_5_vl_rope_index(longs(video).unsqueeze(0), {}, c), Error);
}

TEST(Qwen2_5_VL, MropeReducesTo1dForEqualRowsAndPicksSections) {
  at::Tensor inv = nn::rope_inv_freq(16, 1e6);  // head_dim 16, sections sum to 8
  at::Tensor pos = at::arange(5, at::kLong).view({1, 5});
  auto [c1, s1] = nn::rope_cos_sin(pos, inv);
  auto [c3, s3] = nn::mrope_cos_sin(pos.unsqueeze(0).expand({3, 1, 5}), inv, {2, 3, 3});
  EXPECT_TRUE(at::equal(c1, c3));
  EXPECT_TRUE(at::equal(s1, s3));
  // Rows t = 1, h = 2, w = 3: dim 0 uses t, dim 2 uses h, dim 7 uses w, and dim 8 + 2 = 10 uses h again.
  at::Tensor rows = longs({1, 2, 3}).view({3, 1, 1});
  auto [c, s] = nn::mrope_cos_sin(rows, inv, {2, 3, 3});
  const at::Tensor f = inv;
  EXPECT_NEAR(c[0][0][0].item<double>(), std::cos(1 * f[0].item<double>()), 1e-6);
  EXPECT_NEAR(c[0][0][2].item<double>(), std::cos(2 * f[2].item<double>()), 1e-6);
  EXPECT_NEAR(c[0][0][7].item<double>(), std::cos(3 * f[7].item<double>()), 1e-6);
  EXPECT_NEAR(s[0][0][10].item<double>(), std::sin(2 * f[2].item<double>()), 1e-6);
  EXPECT_THROW(nn::mrope_cos_sin(rows, inv, {2, 3, 2}), Error);
}

TEST(Qwen2_5_VL, PatchOrderIsMergeBlocksThenChannelTimeRowColumn) {
  Qwen2_5_VLPreprocessorConfig pc;
  at::manual_seed(0);
  at::Tensor img = at::randint(0, 256, {28, 56, 3}, at::kLong).to(at::kByte);  // 2x4 patches
  Qwen2_5_VLPixels pb = qwen2_5_vl_patchify({img}, pc);
  ASSERT_EQ(pb.pixel_values.sizes(), (std::vector<int64_t>{8, 3 * 2 * 14 * 14}));
  EXPECT_TRUE(at::equal(pb.grid_thw, grid(1, 2, 4)));
  // Token j: merge block b = j / 4 (raster over the 1x2 blocks), patch (mh, mw) = ((j % 4) / 2, j % 2).
  for (int64_t j : {0, 3, 5, 6}) {
    const int64_t b = j / 4, py0 = ((j % 4) / 2) * 14, px0 = b * 28 + (j % 2) * 14;
    for (int64_t c : {0, 2})
      for (int64_t t : {0, 1})
        for (auto [y, x] : {std::pair<int64_t, int64_t>{0, 0}, {13, 5}, {7, 13}}) {
          const double raw = img[py0 + y][px0 + x][c].item<int64_t>();
          const double want = (raw / 255.0 - pc.image_mean[c]) / pc.image_std[c];
          const int64_t col = ((c * 2 + t) * 14 + y) * 14 + x;
          EXPECT_NEAR(pb.pixel_values[j][col].item<double>(), want, 1e-5) << j << " " << col;
        }
  }
  EXPECT_THROW(qwen2_5_vl_patchify({at::zeros({30, 28, 3}, at::kByte)}, pc), Error);
  EXPECT_THROW(qwen2_5_vl_patchify({at::zeros({28, 28, 3}, at::kFloat)}, pc), Error);
  EXPECT_THROW(qwen2_5_vl_patchify({}, pc), Error);
}

namespace {
struct VlInputs {
  at::Tensor ids, pixel_values, grid_thw;
};
VlInputs fixture_inputs(const Qwen2_5_VL& m) {
  auto io = SafetensorsFile::open(fixture("qwen2_5_vl/io.safetensors"));
  auto px = qwen2_5_vl_patchify({io.get("resized_image_0")}, m.preprocessor());
  return {io.get("input_ids"), px.pixel_values, px.grid_thw};
}
}  // namespace

TEST(Qwen2_5_VL, TeacherForcedDecodeMatchesFullSequence) {
  auto m = Qwen2_5_VL::load(fixture("qwen2_5_vl"));
  VlInputs in = fixture_inputs(m);
  const int64_t L = in.ids.size(1);
  at::Tensor more = longs({3, 17, 42, 8}).unsqueeze(0);
  auto full_cache = m.new_cache(1, L + 4);
  at::Tensor full = m.prefill(at::cat({in.ids, more}, 1), in.pixel_values, in.grid_thw, full_cache, {}, 0);
  auto cache = m.new_cache(1, L + 4);
  std::vector<at::Tensor> got = {m.prefill(in.ids, in.pixel_values, in.grid_thw, cache)};
  for (int64_t i = 0; i < 4; ++i) got.push_back(m.decode_one(more.select(1, i), cache).unsqueeze(1));
  EXPECT_LT(max_abs(at::cat(got, 1), full.slice(1, L - 1)), 1e-4);
}

TEST(Qwen2_5_VL, LoadsTheNewCheckpointLayoutToo) {
  TempDir d;
  for (const char* f : {"config.json", "preprocessor_config.json"})
    fs::copy(fixture(std::string("qwen2_5_vl/") + f), d.path() / f);
  auto ck = Checkpoint::open(fixture("qwen2_5_vl/model.safetensors"));
  std::map<std::string, at::Tensor> renamed;
  for (const auto& n : ck.names()) {
    std::string k = n;
    if (k.rfind("visual.", 0) == 0) k = "model." + k;
    else if (k.rfind("model.", 0) == 0) k = "model.language_model." + k.substr(6);
    renamed[k] = ck.get(n);
  }
  save_safetensors((d.path() / "model.safetensors").string(), renamed);
  auto a = Qwen2_5_VL::load(fixture("qwen2_5_vl")), b = Qwen2_5_VL::load(d.path().string());
  VlInputs in = fixture_inputs(a);
  auto ca = a.new_cache(1, in.ids.size(1)), cb = b.new_cache(1, in.ids.size(1));
  EXPECT_TRUE(at::equal(a.prefill(in.ids, in.pixel_values, in.grid_thw, ca),
                        b.prefill(in.ids, in.pixel_values, in.grid_thw, cb)));
}

TEST(Qwen2_5_VL, RejectsMismatchedImagesAndBadInputs) {
  auto m = Qwen2_5_VL::load(fixture("qwen2_5_vl"));
  VlInputs in = fixture_inputs(m);
  const int64_t L = in.ids.size(1);
  {
    auto c = m.new_cache(1, L);  // image pads but no pixels
    EXPECT_THROW(m.prefill(in.ids, {}, {}, c), Error);
  }
  {
    auto c = m.new_cache(1, L);  // one pad token too few for the features
    at::Tensor ids = in.ids.clone();
    const int64_t first_pad = ids[0].eq(m.config().image_token_id).nonzero()[0][0].item<int64_t>();
    ids[0][first_pad] = 5;
    EXPECT_THROW(m.prefill(ids, in.pixel_values, in.grid_thw, c), Error);
  }
  {
    auto c = m.new_cache(1, L);  // pixel rows do not match the grid
    EXPECT_THROW(m.prefill(in.ids, in.pixel_values.slice(0, 0, 40), in.grid_thw, c), Error);
  }
  {
    auto c = m.new_cache(1, L + 1);  // prefill twice
    m.prefill(in.ids, in.pixel_values, in.grid_thw, c);
    EXPECT_THROW(m.prefill(in.ids.slice(1, 0, 1), {}, {}, c), Error);
  }
  EXPECT_THROW(m.visual().forward(in.pixel_values, longs({1, 8, 10})), Error);  // grid not [n, 3]
}

namespace {
// The fixture model (vocab 600) with a tiny byte-level tokenizer whose special tokens carry the
// config's ids.
fs::path vl_folder_with_tokenizer(const TempDir& d) {
  for (const auto& e : fs::directory_iterator(fixture("qwen2_5_vl"))) fs::copy(e.path(), d.path() / e.path().filename());
  write_tiny_tokenizer((d.path() / "tokenizer.json").string(), 590,
                       {{"<|vision_start|>", 590}, {"<|vision_end|>", 591}, {"<|vision_pad|>", 592},
                        {"<|image_pad|>", 593}, {"<|video_pad|>", 594}, {"<|im_start|>", 595},
                        {"<|im_end|>", 596}, {"<|endoftext|>", 597}});
  return d.path();
}
}  // namespace

TEST(Qwen2_5_VL, AnswerBuildsTheChatPromptAndDecodesGreedily) {
  TempDir d;
  auto m = Qwen2_5_VL::load(vl_folder_with_tokenizer(d).string());
  ASSERT_NE(m.tokenizer(), nullptr);
  auto io = SafetensorsFile::open(fixture("qwen2_5_vl/io.safetensors"));
  Image img = image_from_tensor(io.get("raw_image_0"));
  auto p = m.build_prompt({img}, "Hi?");
  std::vector<int64_t> ids(p.ids.data_ptr<int64_t>(), p.ids.data_ptr<int64_t>() + p.ids.numel());
  // <|im_start|>system ... <|vision_start|> 20 x <|image_pad|> <|vision_end|> Hi? <|im_end|> ...
  EXPECT_EQ(ids.front(), 595);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 593), 20);
  const auto vs = std::find(ids.begin(), ids.end(), 590) - ids.begin();
  EXPECT_EQ(ids[vs + 21], 591);
  EXPECT_EQ(ids[vs + 22], 'H');  // byte symbols are ids 0..255
  EXPECT_TRUE(at::equal(p.pixels.pixel_values, io.get("pixel_values")));
  // The greedy answer is the decoded generate() of that prompt, up to <|im_end|>.
  Qwen2_5_VL::AnswerOptions o;
  o.max_new_tokens = 6;
  const std::string a = m.answer({img}, "Hi?", o);
  sampling::TokenLoopOptions g;
  g.max_new_tokens = 6;
  g.eos_token_ids = {596, 597};
  at::Tensor t = m.generate(p.ids, p.pixels.pixel_values, p.pixels.grid_thw, g);
  std::vector<int64_t> gen;
  for (int64_t i = 0; i < t.size(1) && t[0][i].item<int64_t>() < 596; ++i) gen.push_back(t[0][i].item<int64_t>());
  EXPECT_EQ(a, m.tokenizer()->decode(gen, true));
  EXPECT_EQ(a, m.answer({img}, "Hi?", o));
}

TEST(Qwen2_5_VL, AnswerNeedsAMatchingTokenizer) {
  auto m = Qwen2_5_VL::load(fixture("qwen2_5_vl"));
  EXPECT_THROW(m.answer({}, "Hi?"), Error);  // no tokenizer.json in the fixture
  EXPECT_THROW(m.set_tokenizer(text::load_tokenizer(fixture("tokenizers/qwen2/tokenizer.json"))), Error);  // 151655 != 593
}
