#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "test_util.h"

using namespace omniflux;

namespace {
std::string make_model(const TempDir& dir) {
  const std::string p = (dir.path() / "model.safetensors").string();
  save_safetensors(p, std::map<std::string, at::Tensor>{
                          {"model.layers.0.self_attn.q_proj.weight", at::randn({8, 4})},
                          {"model.layers.0.self_attn.q_proj.bias", at::randn({8}).to(at::kBFloat16)},
                          {"model.layers.1.self_attn.q_proj.weight", at::randn({8, 4})},
                          {"model.position_ids", at::arange(5, at::kLong)},
                          {"optimizer.step", at::zeros({1})},
                      });
  return p;
}
}  // namespace

TEST(WeightStore, PrefixViewsFetchByPublishedName) {
  TempDir dir;
  auto store = WeightStore::open(make_model(dir));
  WeightView layer1 = store->root().sub("model.layers").sub(1);
  EXPECT_EQ(layer1.prefix(), "model.layers.1");
  at::Tensor w = layer1.get("self_attn.q_proj.weight", {8, 4});
  EXPECT_TRUE(at::equal(w, store->checkpoint().get("model.layers.1.self_attn.q_proj.weight")));
  EXPECT_EQ(layer1.get("self_attn.q_proj.weight", {-1, 4}).size(0), 8);  // -1 matches any size
  EXPECT_FALSE(layer1.contains("self_attn.q_proj.bias"));
  EXPECT_FALSE(layer1.get_optional("self_attn.q_proj.bias", {8}).defined());
}

TEST(WeightStore, ConvertsFloatsToTheRuntimeDtypeAndKeepsIntegers) {
  TempDir dir;
  RuntimeOptions rt;
  rt.dtype = "bfloat16";
  auto store = WeightStore::open(make_model(dir), rt);
  auto w = store->root();
  EXPECT_EQ(w.get("model.layers.0.self_attn.q_proj.weight", {8, 4}).scalar_type(), at::kBFloat16);
  EXPECT_EQ(w.get("model.layers.0.self_attn.q_proj.bias", {8}, at::kFloat).scalar_type(), at::kFloat);
  EXPECT_EQ(w.get("model.position_ids", {5}, at::kLong).scalar_type(), at::kLong);  // integer buffers say so
}

TEST(WeightStore, WrongShapeNamesKeyFileAndBothShapes) {
  TempDir dir;
  auto store = WeightStore::open(make_model(dir));
  try {
    store->root().sub("model.layers.0").get("self_attn.q_proj.weight", {4, 8});
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("model.layers.0.self_attn.q_proj.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 8]"), std::string::npos) << m;
    EXPECT_NE(m.find("[8, 4]"), std::string::npos) << m;
  }
  EXPECT_THROW(store->root().get("model.layers.0.self_attn.q_proj.weight", {8, 4, 1}), Error);
}

TEST(WeightStore, MissingKeyIsAnError) {
  TempDir dir;
  auto store = WeightStore::open(make_model(dir));
  try {
    store->root().sub("model.layers").sub(2).get("self_attn.q_proj.weight", {8, 4});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.2.self_attn.q_proj.weight"), std::string::npos);
  }
}

TEST(WeightStore, FinishReportsUnusedKeysUnlessIgnored) {
  TempDir dir;
  auto store = WeightStore::open(make_model(dir));
  auto w = store->root();
  w.get("model.layers.0.self_attn.q_proj.weight", {8, 4});
  w.get("model.layers.0.self_attn.q_proj.bias", {8});
  w.get("model.layers.1.self_attn.q_proj.weight", {8, 4});
  w.get("model.position_ids", {5}, at::kLong);
  try {
    store->finish();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.step"), std::string::npos);
  }
  store->ignore_prefix("optimizer.");
  EXPECT_NO_THROW(store->finish());
  EXPECT_TRUE(store->unused().empty());
}

TEST(WeightStore, LoadsAFixtureModelCompletely) {
  // Every tensor of the qwen2_lm fixture, fetched through views built from its config.
  Config cfg = Config::load(fixture("qwen2_lm"));
  auto store = WeightStore::open(fixture("qwen2_lm"));
  const int64_t h = cfg.get_int("hidden_size"), inter = cfg.get_int("intermediate_size");
  const int64_t heads = cfg.get_int("num_attention_heads"), kv = cfg.get_int("num_key_value_heads");
  const int64_t hd = h / heads, vocab = cfg.get_int("vocab_size");
  auto m = store->root().sub("model");
  m.get("embed_tokens.weight", {vocab, h});
  m.get("norm.weight", {h});
  for (int64_t i = 0; i < cfg.get_int("num_hidden_layers"); ++i) {
    auto l = m.sub("layers").sub(i);
    l.get("input_layernorm.weight", {h});
    l.get("post_attention_layernorm.weight", {h});
    l.get("self_attn.q_proj.weight", {heads * hd, h});
    l.get("self_attn.q_proj.bias", {heads * hd});
    l.get("self_attn.k_proj.weight", {kv * hd, h});
    l.get("self_attn.k_proj.bias", {kv * hd});
    l.get("self_attn.v_proj.weight", {kv * hd, h});
    l.get("self_attn.v_proj.bias", {kv * hd});
    l.get("self_attn.o_proj.weight", {h, heads * hd});
    l.get("mlp.gate_proj.weight", {inter, h});
    l.get("mlp.up_proj.weight", {inter, h});
    l.get("mlp.down_proj.weight", {h, inter});
  }
  EXPECT_NO_THROW(store->finish());
}

TEST(WeightStore, InMemoryCheckpointServesTensorsStrictly) {
  RuntimeOptions rt;
  rt.dtype = "bfloat16";
  at::Tensor w = at::randn({4, 3});
  WeightStore store(Checkpoint::from_tensors({{"a.weight", w}, {"a.bias", at::zeros({4})}, {"ids", at::arange(3)}},
                                             "<random weights>"),
                    rt);
  auto v = store.root().sub("a");
  at::Tensor got = v.get("weight", {4, 3});
  EXPECT_EQ(got.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::allclose(got.to(at::kFloat), w, 1e-2, 1e-2));
  EXPECT_EQ(store.root().get("ids", {3}, at::kLong).scalar_type(), at::kLong);
  EXPECT_THROW(store.root().get("ids", {3}), Error);  // no dtype given: a float parameter is wanted
  try {
    v.get("bias", {5});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<random weights>: a.bias"), std::string::npos) << e.what();
  }
  EXPECT_THROW(store.finish(), Error);  // a.bias was never fetched
  v.get("bias", {4});
  EXPECT_NO_THROW(store.finish());
  EXPECT_EQ(store.checkpoint().names(), (std::vector<std::string>{"a.bias", "a.weight", "ids"}));
}
