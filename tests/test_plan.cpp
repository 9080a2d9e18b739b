// Dry runs (omniflux/plan.h): weight figures, the activation probe, the meta kernels omniflux
// supplies, header-only checkpoints, and the meta-device run of every real config at real sizes.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <map>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "nn/attention.h"
#include "nn/kv_cache.h"
#include "omniflux/plan.h"
#include "test_util.h"

using namespace omniflux;
using nlohmann::json;

TEST(Plan, WeightFiguresCountBf16Fp8AndBlocks) {
  auto meta = [](std::vector<int64_t> s) { return at::empty(s, at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16)); };
  Checkpoint ck = Checkpoint::from_tensors({{"embed_tokens.weight", meta({100, 8})},
                                            {"layers.0.proj.weight", meta({16, 8})},
                                            {"layers.0.proj.bias", meta({16})},
                                            {"layers.1.proj.weight", meta({32, 8})},
                                            {"layers.1.norm.weight", meta({8})},
                                            {"head.conv.weight", meta({4, 8, 3, 3})},
                                            {"lm_head.weight", meta({100, 8})}},
                                           "mem");
  const plan::WeightFigures f = plan::weight_figures(ck);
  EXPECT_EQ(f.tensors, 7);
  EXPECT_EQ(f.params, 800 + 128 + 16 + 256 + 8 + 288 + 800);
  EXPECT_EQ(f.bytes_bf16, 2 * f.params);
  // fp8: the two Linear weights at 1 byte + a 4-byte scale per row; the rest stays 2 bytes.
  EXPECT_EQ(f.bytes_fp8, (128 + 4 * 16) + (256 + 4 * 32) + 2 * (800 + 16 + 8 + 288 + 800));
  ASSERT_EQ(f.blocks.size(), 1u);
  EXPECT_EQ(f.blocks[0].prefix, "layers");
  EXPECT_EQ(f.blocks[0].count, 2);
  EXPECT_EQ(f.blocks[0].params, 256 + 8);  // the larger block
  EXPECT_EQ(plan::weight_figures(ck, {"layers.1."}).params, 264);
  EXPECT_FALSE(plan::fp8_eligible("model.embed_tokens.weight", {10, 4}));
  // The quantiser's rule: block linears only (FLUX's patch embedding stays bf16).
  EXPECT_FALSE(plan::fp8_eligible("x_embedder.weight", {10, 4}));
  EXPECT_TRUE(plan::fp8_eligible("single_transformer_blocks.3.proj_out.weight", {10, 4}));
}

TEST(Plan, ProbeSeesAllocationsNotViews) {
  c10::InferenceMode guard;
  at::Tensor big = at::zeros({64, 64});
  int64_t bytes = 0;
  {
    plan::ActivationProbe probe("views");
    at::Tensor v = big.view({4096}).slice(0, 0, 100).unsqueeze(0);  // views: nothing allocated
    big.add_(1);                                                    // in place: nothing allocated
    at::Tensor y = v * 2;                                           // 100 floats
    bytes = probe.largest().bytes;
    EXPECT_EQ(probe.largest().op, "aten::mul");
    EXPECT_EQ(probe.largest().run, "views");
  }
  EXPECT_EQ(bytes, 400);
}

TEST(Plan, GroupedQueryAttentionAllocatesOnlyItsOutput) {
  // k/v are never repeated to the query heads: the largest tensor the attention creates is its
  // output [1, 8, 1, 64], not a [1, 8, 512, 64] copy of k or v.
  c10::InferenceMode guard;
  at::Tensor q = at::randn({1, 8, 1, 64}), k = at::randn({1, 2, 512, 64}), v = at::randn({1, 2, 512, 64});
  nn::AttentionOptions opt;
  opt.causal = true;
  for (bool padded : {false, true}) {
    if (padded) opt.mask = at::zeros({1, 1, 1, 512});
    plan::ActivationProbe probe("gqa");
    (void)nn::attention(q, k, v, opt);
    EXPECT_LE(probe.largest().bytes, std::max<int64_t>(8 * 64 * 4, 512 * 4)) << "padded " << padded;
  }
}

TEST(Plan, SuppliedMetaKernelsMatchTheCpuShapes) {
  c10::InferenceMode guard;
  { plan::ActivationProbe registers_them("init"); }
  auto on_meta = [](const at::Tensor& t) { return t.to(at::kMeta); };
  auto same = [](const at::Tensor& cpu, const at::Tensor& meta, const char* what) {
    EXPECT_EQ(cpu.sizes(), meta.sizes()) << what;
    EXPECT_EQ(cpu.scalar_type(), meta.scalar_type()) << what;
    EXPECT_TRUE(meta.is_meta()) << what;
  };
  at::Tensor c = at::rand({4, 1}) > 0.5, x = at::randn({4, 5}), y = at::randn({1, 5}, at::kDouble);
  same(at::where(c, x, y), at::where(on_meta(c), on_meta(x), on_meta(y)), "where");
  same(at::logical_and(c, at::ones({5}, at::kBool)), at::logical_and(on_meta(c), at::ones({5}, at::TensorOptions().dtype(at::kBool).device(at::kMeta))), "logical_and");
  at::Tensor idx = at::tensor({2, 0, 1}, at::kLong);
  same(x.index_select(1, idx), on_meta(x).index_select(1, on_meta(idx)), "index_select");
  const at::Tensor ids = at::tensor({1, 2}, at::kLong).view({1, 2});
  same(at::embedding(x, ids), at::embedding(on_meta(x), on_meta(ids)), "embedding");
  at::Tensor img = at::randn({2, 8, 9, 7}), w = at::randn({8}), b = at::randn({8});
  same(at::layer_norm(img, {7}), at::layer_norm(on_meta(img), {7}), "layer_norm");
  same(at::group_norm(img, 4, w, b), at::group_norm(on_meta(img), 4, on_meta(w), on_meta(b)), "group_norm");
  at::Tensor cw = at::randn({6, 8, 3, 3});
  same(at::conv2d(img, cw, {}, 2, 1), at::conv2d(on_meta(img), on_meta(cw), {}, 2, 1), "conv2d");
  same(at::conv_transpose2d(img, cw.transpose(0, 1), {}, 2, 1, 1), at::conv_transpose2d(on_meta(img), on_meta(cw.transpose(0, 1)), {}, 2, 1, 1), "conv_transpose2d");
  same(x.abs(), on_meta(x).abs(), "abs");
  same(x.flip({0}), on_meta(x).flip({0}), "flip");
  same(at::multinomial(x.softmax(1), 3), at::multinomial(on_meta(x.softmax(1)), 3), "multinomial");
  at::Tensor grid = at::rand({2, 4, 6, 2}) * 2 - 1;
  same(at::grid_sampler(img, grid, 0, 0, false), at::grid_sampler(on_meta(img), on_meta(grid), 0, 0, false), "grid_sampler");
  same(at::scaled_dot_product_attention(at::randn({1, 4, 3, 8}), at::randn({1, 2, 5, 8}), at::randn({1, 2, 5, 8}), at::ones({3, 5}, at::kBool), 0.0, false, std::nullopt, true),
       at::scaled_dot_product_attention(at::empty({1, 4, 3, 8}, at::kMeta), at::empty({1, 2, 5, 8}, at::kMeta), at::empty({1, 2, 5, 8}, at::kMeta),
                                        at::empty({3, 5}, at::TensorOptions().dtype(at::kBool).device(at::kMeta)), 0.0, false, std::nullopt, true),
       "sdpa");
}

TEST(Plan, MetaTensorsSaveAsHolesAndLoadWithTheirShapes) {
  TempDir dir;
  const auto file = dir.path() / "stand_in.safetensors";
  const std::map<std::string, at::Tensor> tensors = {
      {"a", at::empty({1024, 1024}, at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16))},
      {"b", at::ones({3})},
      {"c", at::empty({256, 1024}, at::TensorOptions().device(at::kMeta))}};
  save_safetensors(file.string(), tensors);
  const SafetensorsFile f = SafetensorsFile::open(file.string());
  EXPECT_EQ(f.info("a").shape, (std::vector<int64_t>{1024, 1024}));
  EXPECT_EQ(f.info("c").shape, (std::vector<int64_t>{256, 1024}));
  EXPECT_TRUE(at::equal(f.get("b"), at::ones({3})));
  EXPECT_EQ(f.get("a").abs().sum().item<double>(), 0.0);  // a hole reads as zeros
  struct stat st {};
  ASSERT_EQ(::stat(file.string().c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), f.file_size());
  EXPECT_LT(static_cast<int64_t>(st.st_blocks) * 512, 1 << 20) << "3 MiB of meta tensors should leave holes";
}

TEST(Plan, KVCacheSkipAndBytes) {
  nn::KVCache cache(3, 2, 4, 10, 8, at::TensorOptions().dtype(at::kBFloat16));
  EXPECT_EQ(cache.bytes(), 3 * 2 * 2 * 4 * 10 * 8 * 2);
  cache.skip(9);
  EXPECT_EQ(cache.length(), 9);
  EXPECT_THROW(cache.skip(2), Error);
  (void)cache.begin_step(1);
  EXPECT_TRUE(at::equal(cache.positions().select(1, 0), at::tensor({9, 9}, at::kLong)));
}

TEST(Plan, RealConfigsRunOnTheMetaDeviceAtRealSizes) {
  // omniflux-plan writes header-only stand-ins from models/configs and runs every component of
  // the three requests on the meta device.
  const std::string cmd = bin("omniflux-plan") + " --json 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::map<std::string, std::vector<json>> by_name;
  std::string log;
  char buf[1 << 16];
  while (fgets(buf, sizeof buf, p)) {
    log += buf;
    if (buf[0] == '{') {
      json j = json::parse(buf);
      by_name[j["component"].get<std::string>()].push_back(j);
    }
  }
  const int st = pclose(p);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << log;
  for (const auto& [name, runs] : by_name)
    for (const auto& j : runs) {
      EXPECT_TRUE(j["ok"].get<bool>()) << name << ": " << j.dump();
      EXPECT_GT(j["largest_activation"]["bytes"].get<int64_t>(), 0) << name;
    }
  // Parameter counts published for the real checkpoints (model cards and index files):
  // FLUX.1-dev transformer 11,901,408,320 (index total_size 23,802,816,640 bytes in bf16);
  // T5-XXL encoder 4,762,310,656; CLIP-L text 123,060,480; FLUX VAE 83,819,683 (244 tensors);
  // Qwen2.5-VL-7B 8,292,166,656 of which the vision tower 676,550,144 and the LM
  // 7,615,616,512 (= Qwen2.5-7B, index total_size 15,231,233,024 bytes in bf16).
  const std::map<std::string, int64_t> published = {
      {"flux_dit", 11901408320}, {"uniworld_dit", 11901408320}, {"t5_encoder", 4762310656},
      {"clip_text", 123060480}, {"flux_vae", 83819683}, {"qwen2_5_vl_vision", 676550144},
      {"qwen2_5_vl_lm", 7615616512}};
  for (const auto& [name, params] : published) {
    ASSERT_TRUE(by_name.count(name)) << name << " missing\n" << log;
    for (const auto& j : by_name[name]) EXPECT_EQ(j["params"].get<int64_t>(), params) << name;
  }
  EXPECT_EQ(by_name.at("flux_vae")[0]["tensors"].get<int64_t>(), 244);
  // Every request ran its components: 4 (FLUX) + 8 (UniWorld) + 7 (X-Omni).
  size_t total = 0;
  for (const auto& [name, runs] : by_name) total += runs.size();
  EXPECT_EQ(total, 19u);
  // Per-block figures of the DiT, from diffusers' block definitions at D = 3072, head_dim 128:
  // double block 36 D^2 + 30 D + 4 * 128, single block 15 D^2 + 11 D + 2 * 128.
  std::map<std::string, std::pair<int64_t, int64_t>> blocks;
  for (const auto& b : by_name.at("flux_dit")[0]["blocks"])
    blocks[b["prefix"].get<std::string>()] = {b["count"].get<int64_t>(), b["params"].get<int64_t>()};
  const int64_t D = 3072;
  EXPECT_EQ(blocks["transformer_blocks"], std::make_pair(int64_t(19), 36 * D * D + 30 * D + 512));
  EXPECT_EQ(blocks["single_transformer_blocks"], std::make_pair(int64_t(38), 15 * D * D + 11 * D + 256));
}
