#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace omniflux;

namespace {

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  const fs::path p = dir.path() / "all.safetensors";
  std::vector<TensorToWrite> list = {
      {"f64", at::arange(6, at::kDouble).reshape({2, 3})},
      {"f32", at::randn({3, 4})},
      {"f16", at::randn({5}).to(at::kHalf)},
      {"bf16", at::randn({2, 2, 2}).to(at::kBFloat16)},
      {"i64", at::arange(-3, 4, at::kLong)},
      {"i32", at::arange(7, at::kInt)},
      {"i16", at::arange(3, at::kShort)},
      {"i8", at::arange(-4, 4, at::kChar)},
      {"u8", at::arange(200, 205, at::kByte)},
      {"bool", at::tensor({1, 0, 1}, at::kByte).to(at::kBool)},
      {"scalar", at::scalar_tensor(2.5, at::kFloat)},
      {"empty", at::empty({0, 4}, at::kFloat)},
      {"f8e4m3", at::tensor({0x38, 0xB8, 0x7E, 0x01}, at::kByte), true, Dtype::F8_E4M3},
      {"f8e5m2", at::tensor({0x3C, 0x7C, 0x01, 0xC0}, at::kByte), true, Dtype::F8_E5M2},
  };
  save_safetensors(p.string(), list, {{"format", "pt"}, {"note", "ünïcode"}});
  SafetensorsFile f = SafetensorsFile::open(p.string());
  EXPECT_EQ(f.tensors().size(), list.size());
  EXPECT_EQ(f.metadata().at("note"), "ünïcode");
  for (const auto& w : list) {
    if (w.has_dtype_override) continue;
    at::Tensor got = f.get(w.name);
    EXPECT_EQ(got.scalar_type(), w.tensor.scalar_type()) << w.name;
    EXPECT_EQ(got.sizes(), w.tensor.sizes()) << w.name;
    EXPECT_TRUE(at::equal(got, w.tensor)) << w.name;
  }
  EXPECT_EQ(f.info("f8e4m3").dtype, Dtype::F8_E4M3);
  // OCP FP8: E4M3 0x38 = 1.0, 0xB8 = -1.0, 0x7E = 448 (max), 0x01 = 2^-9 (smallest subnormal).
  at::Tensor e4 = f8_to_float(f.get("f8e4m3"), Dtype::F8_E4M3);
  EXPECT_TRUE(at::equal(e4, at::tensor({1.0f, -1.0f, 448.0f, std::ldexp(1.0f, -9)})));
  // E5M2 0x3C = 1.0, 0x7C = +inf, 0x01 = 2^-16, 0xC0 = -2.0.
  at::Tensor e5 = f8_to_float(f.get("f8e5m2"), Dtype::F8_E5M2);
  EXPECT_EQ(e5[0].item<float>(), 1.0f);
  EXPECT_TRUE(std::isinf(e5[1].item<float>()));
  EXPECT_EQ(e5[2].item<float>(), std::ldexp(1.0f, -16));
  EXPECT_EQ(e5[3].item<float>(), -2.0f);
}

TEST(Safetensors, HeaderIsPaddedAndTensorsViewTheMapping) {
  TempDir dir;
  const fs::path p = dir.path() / "a.safetensors";
  save_safetensors(p.string(), std::map<std::string, at::Tensor>{{"w", at::randn({64, 64})}});
  const std::string bytes = read_bytes(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  SafetensorsFile f = SafetensorsFile::open(p.string());
  at::Tensor w = f.get("w");
  // Zero copy: the tensor's storage is inside the mapped file.
  EXPECT_EQ(static_cast<const void*>(w.data_ptr()), static_cast<const void*>(f.data(f.info("w"))));
  // In-place writes go to private pages and never reach the file.
  w.zero_();
  EXPECT_EQ(read_bytes(p), bytes);
}

TEST(Safetensors, MisalignedDataIsCopied) {
  // A header of odd length (valid per the format) leaves F32 data misaligned.
  TempDir dir;
  std::string hdr = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  hdr += " ";  // odd total
  ASSERT_NE((8 + hdr.size()) % 4, 0u);
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((hdr.size() >> (8 * i)) & 0xFF);
  float vals[2] = {1.5f, -2.0f};
  bytes += hdr + std::string(reinterpret_cast<char*>(vals), 8);
  write_file(dir.path() / "m.safetensors", bytes);
  at::Tensor x = SafetensorsFile::open((dir.path() / "m.safetensors").string()).get("x");
  EXPECT_TRUE(at::equal(x, at::tensor({1.5f, -2.0f})));
}

TEST(Safetensors, ReadsReferenceFixtureFile) {
  SafetensorsFile f = SafetensorsFile::open(fixture("qwen2_lm/model.safetensors"));
  const TensorInfo& emb = f.info("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype, Dtype::F32);
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{512, 64}));
  EXPECT_FALSE(f.contains("lm_head.weight"));  // tied, per the MANIFEST
  EXPECT_TRUE(at::isfinite(f.get("model.embed_tokens.weight")).all().item<bool>());
}

// Every file of the hand-made corpus (tests/tools/make_bad_safetensors.py) is rejected with an
// omniflux::Error that names the file and says what is wrong.
TEST(Safetensors, RejectsEveryMalformedFileInCorpus) {
  const fs::path dir = fixture("bad_safetensors");
  nlohmann::json cases = nlohmann::json::parse(read_bytes(dir / "cases.json"));
  ASSERT_GE(cases.size(), 20u);
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const std::string path = (dir / it.key()).string();
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << it.key() << " was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(it.value().get<std::string>()), std::string::npos) << it.key() << ": " << msg;
      EXPECT_NE(msg.find(it.key()), std::string::npos) << "error does not name the file: " << msg;
    }
  }
}

TEST(Safetensors, MissingFileAndMissingTensor) {
  EXPECT_THROW(SafetensorsFile::open("/nonexistent/x.safetensors"), Error);
  TempDir dir;
  EXPECT_THROW(SafetensorsFile::open(dir.path().string()), Error);  // a folder is not a file
  save_safetensors((dir.path() / "a.safetensors").string(),
                   std::map<std::string, at::Tensor>{{"w", at::zeros({2})}});
  SafetensorsFile f = SafetensorsFile::open((dir.path() / "a.safetensors").string());
  try {
    f.get("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRejected) {
  TempDir dir;
  const fs::path p = dir.path() / "v.safetensors";
  save_safetensors(p.string(), std::map<std::string, at::Tensor>{{"a", at::randn({3})}, {"b", at::randn({2, 2})}});
  const std::string bytes = read_bytes(p);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(SafetensorsFile::from_buffer(reinterpret_cast<const uint8_t*>(bytes.data()), n, "cut"),
                 Error)
        << "accepted a file cut to " << n << " bytes";
  }
}

TEST(Checkpoint, ShardedIndex) {
  TempDir dir;
  save_safetensors((dir.path() / "model-00001-of-00002.safetensors").string(),
                   std::map<std::string, at::Tensor>{{"a", at::ones({2})}, {"b", at::zeros({3})}});
  save_safetensors((dir.path() / "model-00002-of-00002.safetensors").string(),
                   std::map<std::string, at::Tensor>{{"c", at::full({1}, 7.0)}});
  nlohmann::json idx = {{"metadata", {{"total_size", 24}}},
                        {"weight_map",
                         {{"a", "model-00001-of-00002.safetensors"},
                          {"b", "model-00001-of-00002.safetensors"},
                          {"c", "model-00002-of-00002.safetensors"}}}};
  write_file(dir.path() / "model.safetensors.index.json", idx.dump());
  Checkpoint c = Checkpoint::open(dir.path().string());  // the folder finds the index
  EXPECT_EQ(c.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(c.files().size(), 2u);
  EXPECT_EQ(c.get("c").item<float>(), 7.0f);

  // The index names a shard that does not exist.
  idx["weight_map"]["d"] = "model-00003-of-00002.safetensors";
  write_file(dir.path() / "model.safetensors.index.json", idx.dump());
  EXPECT_THROW(Checkpoint::open(dir.path().string()), Error);
  // The index names a tensor its shard lacks.
  idx["weight_map"]["d"] = "model-00002-of-00002.safetensors";
  write_file(dir.path() / "model.safetensors.index.json", idx.dump());
  EXPECT_THROW(Checkpoint::open(dir.path().string()), Error);
  // A shard holds a tensor the index does not list.
  idx["weight_map"].erase("d");
  idx["weight_map"].erase("b");
  write_file(dir.path() / "model.safetensors.index.json", idx.dump());
  EXPECT_THROW(Checkpoint::open(dir.path().string()), Error);
  idx["weight_map"]["b"] = "model-00001-of-00002.safetensors";
  // Paths escaping the folder are refused.
  idx["weight_map"]["c"] = "../model-00002-of-00002.safetensors";
  write_file(dir.path() / "model.safetensors.index.json", idx.dump());
  EXPECT_THROW(Checkpoint::open(dir.path().string()), Error);
  // Not JSON at all.
  write_file(dir.path() / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_THROW(Checkpoint::open(dir.path().string()), Error);
}

TEST(Checkpoint, FolderResolution) {
  EXPECT_NO_THROW(Checkpoint::open(fixture("flux_vae")));  // diffusion_pytorch_model.safetensors
  EXPECT_NO_THROW(Checkpoint::open(fixture("qwen2_lm")));  // model.safetensors
  TempDir empty;
  EXPECT_THROW(Checkpoint::open(empty.path().string()), Error);
  EXPECT_THROW(Checkpoint::open("/nonexistent"), Error);
}
