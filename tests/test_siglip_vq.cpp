// SigLIP-VQ: the ViT-g encoder on tiny models written here, checked against a plain-LibTorch
// computation of the equations of docs/models/xomni.md §2.2; layout detection; the quantizer round trip;
// the any-resolution size rules; bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/siglip_vq.h"
#include "test_util.h"

using namespace omniflux;

namespace {

struct TinyViT {
  int64_t d = 32, heads = 4, mlp = 64, layers = 2, patch = 4, grid = 6;
  std::map<std::string, at::Tensor> w;  // timm names, fused qkv
};

TinyViT make_vit(bool final_norm, uint64_t seed = 7) {
  at::manual_seed(seed);
  TinyViT t;
  const int64_t d = t.d;
  auto mat = [](int64_t o, int64_t i) { return at::randn({o, i}) / std::sqrt(double(i)); };
  auto vec = [](int64_t n) { return at::randn({n}) * 0.02; };
  auto scale = [](int64_t n) { return 1 + 0.1 * at::randn({n}); };
  t.w["patch_embed.proj.weight"] = at::randn({d, 3, t.patch, t.patch}) / std::sqrt(3.0 * t.patch * t.patch);
  t.w["patch_embed.proj.bias"] = vec(d);
  t.w["pos_embed"] = at::randn({1, t.grid * t.grid, d});
  for (int64_t i = 0; i < t.layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    t.w[b + "norm1.weight"] = scale(d);
    t.w[b + "norm1.bias"] = vec(d);
    t.w[b + "attn.qkv.weight"] = mat(3 * d, d);
    t.w[b + "attn.qkv.bias"] = vec(3 * d);
    t.w[b + "attn.proj.weight"] = mat(d, d);
    t.w[b + "attn.proj.bias"] = vec(d);
    t.w[b + "norm2.weight"] = scale(d);
    t.w[b + "norm2.bias"] = vec(d);
    t.w[b + "mlp.fc1.weight"] = mat(t.mlp, d);
    t.w[b + "mlp.fc1.bias"] = vec(t.mlp);
    t.w[b + "mlp.fc2.weight"] = mat(d, t.mlp);
    t.w[b + "mlp.fc2.bias"] = vec(d);
  }
  if (final_norm) {
    t.w["norm.weight"] = scale(d);
    t.w["norm.bias"] = vec(d);
  }
  return t;
}

void write_config(const std::filesystem::path& p, const TinyViT& t) {
  std::ofstream(p) << "{\"hidden_size\": " << t.d << ", \"intermediate_size\": " << t.mlp
                   << ", \"num_hidden_layers\": " << t.layers << ", \"num_attention_heads\": " << t.heads
                   << ", \"patch_size\": " << t.patch << "}";
}

// Writes `weights` (+ config.json) into a fresh folder under `dir` and returns it.
std::string write_model(const TempDir& dir, const std::string& name, const TinyViT& t,
                        const std::map<std::string, at::Tensor>& weights) {
  auto folder = dir.path() / name;
  std::filesystem::create_directories(folder);
  save_safetensors((folder / "model.safetensors").string(), weights);
  write_config(folder / "config.json", t);
  return folder.string();
}

// Bilinear resize matrix [out, in] of F.interpolate(align_corners=False) without antialias:
// src = (dst + 0.5) * in / out - 0.5, clamped below at 0.
at::Tensor bilinear_matrix(int64_t out, int64_t in) {
  at::Tensor m = at::zeros({out, in}, at::kDouble);
  for (int64_t o = 0; o < out; ++o) {
    double src = std::max(0.0, (o + 0.5) * double(in) / double(out) - 0.5);
    int64_t i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), in - 1);
    int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
    double l = src - i0;
    m[o][i0] += 1 - l;
    m[o][i1] += l;
  }
  return m;
}

at::Tensor ln(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  at::Tensor mu = x.mean(-1, true), var = (x - mu).pow(2).mean(-1, true);
  return (x - mu) / at::sqrt(var + 1e-6) * w + b;
}

// The equations of xomni.md §2.2 in double: patchify by reshape, + bilinearly resized table, pre-LN blocks
// with softmax attention and erf GELU, optional final norm.
at::Tensor reference_vit(const TinyViT& t, const std::map<std::string, at::Tensor>& w0, const at::Tensor& img) {
  std::map<std::string, at::Tensor> w;
  for (const auto& [k, v] : w0) w[k] = v.to(at::kDouble);
  const int64_t p = t.patch, d = t.d, h = img.size(1) / p, wd = img.size(2) / p, dh = d / t.heads;
  at::Tensor x = img.to(at::kDouble).view({3, h, p, wd, p}).permute({1, 3, 0, 2, 4}).reshape({h * wd, 3 * p * p});
  x = x.matmul(w["patch_embed.proj.weight"].reshape({d, -1}).t()) + w["patch_embed.proj.bias"];
  at::Tensor table = w["pos_embed"].view({t.grid, t.grid, d});
  at::Tensor pos = at::einsum("ai,ijd,bj->abd", {bilinear_matrix(h, t.grid), table, bilinear_matrix(wd, t.grid)});
  x = x + pos.reshape({h * wd, d});
  for (int64_t i = 0; i < t.layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    at::Tensor y = ln(x, w[b + "norm1.weight"], w[b + "norm1.bias"]);
    at::Tensor qkv = y.matmul(w[b + "attn.qkv.weight"].t()) + w[b + "attn.qkv.bias"];
    std::vector<at::Tensor> heads;
    for (int64_t hh = 0; hh < t.heads; ++hh) {
      at::Tensor q = qkv.slice(1, hh * dh, (hh + 1) * dh), k = qkv.slice(1, d + hh * dh, d + (hh + 1) * dh),
                 v = qkv.slice(1, 2 * d + hh * dh, 2 * d + (hh + 1) * dh);
      heads.push_back(at::softmax(q.matmul(k.t()) / std::sqrt(double(dh)), -1).matmul(v));
    }
    x = x + at::cat(heads, 1).matmul(w[b + "attn.proj.weight"].t()) + w[b + "attn.proj.bias"];
    y = ln(x, w[b + "norm2.weight"], w[b + "norm2.bias"]);
    y = y.matmul(w[b + "mlp.fc1.weight"].t()) + w[b + "mlp.fc1.bias"];
    y = 0.5 * y * (1 + at::erf(y / std::sqrt(2.0)));
    x = x + y.matmul(w[b + "mlp.fc2.weight"].t()) + w[b + "mlp.fc2.bias"];
  }
  if (w.count("norm.weight")) x = ln(x, w["norm.weight"], w["norm.bias"]);
  return x.unsqueeze(0).to(at::kFloat);
}

std::map<std::string, at::Tensor> split_qkv(const TinyViT& t, std::map<std::string, at::Tensor> w) {
  for (int64_t i = 0; i < t.layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".attn.";
    auto ws = w[b + "qkv.weight"].chunk(3, 0), bs = w[b + "qkv.bias"].chunk(3, 0);
    const char* n[3] = {"q_proj", "k_proj", "v_proj"};
    for (int j = 0; j < 3; ++j) {
      w[b + n[j] + ".weight"] = ws[j].contiguous();
      w[b + n[j] + ".bias"] = bs[j].contiguous();
    }
    w.erase(b + "qkv.weight");
    w.erase(b + "qkv.bias");
  }
  return w;
}

}  // namespace

TEST(SiglipViT, MatchesTheSpecEquationsOnANonSquareGrid) {
  TempDir dir;
  TinyViT t = make_vit(/*final_norm=*/false);
  auto vit = SiglipViT::load(write_model(dir, "vit", t, t.w));
  EXPECT_TRUE(vit.layout().fused_qkv);
  EXPECT_FALSE(vit.layout().final_norm);
  EXPECT_EQ(vit.layout().pos_grid, 6);
  at::manual_seed(3);
  // 5 x 8 tokens: the 6 x 6 table is shrunk along h and stretched along w.
  at::Tensor img = at::rand({1, 3, 20, 32}) * 2 - 1;
  at::Tensor got = vit.forward(img);
  ASSERT_EQ(got.sizes(), at::IntArrayRef({1, 40, 32}));
  EXPECT_LT((got - reference_vit(t, t.w, img[0])).abs().max().item<double>(), 1e-4);
}

TEST(SiglipViT, SplitQkvPrefixAndFinalNormLayouts) {
  TempDir dir;
  TinyViT t = make_vit(/*final_norm=*/true);
  at::manual_seed(4);
  at::Tensor img = at::rand({1, 3, 24, 24}) * 2 - 1;  // the stored grid itself: no resize
  at::Tensor ref = reference_vit(t, t.w, img[0]);
  std::map<std::string, at::Tensor> prefixed;
  for (const auto& [k, v] : split_qkv(t, t.w)) prefixed["vision_tower." + k] = v;
  prefixed["vision_tower.attn_pool.probe"] = at::zeros({1, 1, t.d});  // unused MAP head is ignorable
  auto vit = SiglipViT::load(write_model(dir, "split", t, prefixed));
  EXPECT_EQ(vit.layout().prefix, "vision_tower.");
  EXPECT_FALSE(vit.layout().fused_qkv);
  EXPECT_TRUE(vit.layout().final_norm);
  EXPECT_LT((vit.forward(img) - ref).abs().max().item<double>(), 1e-4);
}

TEST(SiglipViT, UnknownLayoutListsTheKeys) {
  TempDir dir;
  TinyViT t = make_vit(false);
  auto w = t.w;
  w["blocks.0.attn.in_proj.weight"] = w["blocks.0.attn.qkv.weight"];
  w.erase("blocks.0.attn.qkv.weight");
  try {
    SiglipViT::load(write_model(dir, "odd", t, w));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.0.attn.in_proj.weight"), std::string::npos) << e.what();
  }
  // No timm patch embedding at all: the message lists what the file holds.
  std::map<std::string, at::Tensor> hf = {{"embeddings.patch_embedding.weight", at::zeros({4, 3, 2, 2})}};
  try {
    SiglipViT::load(write_model(dir, "hf", t, hf));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("embeddings.patch_embedding.weight"), std::string::npos) << e.what();
  }
}

TEST(SiglipViT, BadWeightsAndInputsAreErrors) {
  TempDir dir;
  TinyViT t = make_vit(false);
  auto w = t.w;
  w["blocks.1.mlp.fc1.weight"] = at::zeros({t.mlp + 1, t.d});  // wrong weight shape
  EXPECT_THROW(SiglipViT::load(write_model(dir, "shape", t, w)), Error);
  w = t.w;
  w["blocks.2.norm1.weight"] = at::ones({t.d});  // more blocks than the config says
  EXPECT_THROW(SiglipViT::load(write_model(dir, "deep", t, w)), Error);
  w = t.w;
  w["pos_embed"] = at::zeros({1, 35, t.d});  // not a square grid
  EXPECT_THROW(SiglipViT::load(write_model(dir, "grid", t, w)), Error);
  w = t.w;
  w["head.weight"] = at::zeros({3, t.d});  // an unknown extra key: strict loading
  EXPECT_THROW(SiglipViT::load(write_model(dir, "extra", t, w)), Error);

  auto vit = SiglipViT::load(write_model(dir, "ok", t, t.w));
  EXPECT_THROW(vit.forward(at::zeros({1, 1, 16, 16})), Error);   // grey: one channel
  EXPECT_THROW(vit.forward(at::zeros({1, 3, 18, 16})), Error);   // not a patch multiple
  EXPECT_THROW(vit.forward(at::zeros({3, 16, 16})), Error);      // no batch dim
}

// ---- quantizer ----------------------------------------------------------------------------------

namespace {
std::map<std::string, at::Tensor> make_vq(int64_t c1, int64_t c2, int64_t k, uint64_t seed) {
  at::manual_seed(seed);
  std::map<std::string, at::Tensor> w;
  w["quant_conv.weight"] = at::randn({c2, c1, 1, 1}) / std::sqrt(double(c1));
  w["quant_conv.bias"] = at::randn({c2}) * 0.02;
  w["quantize.embedding.weight"] = at::randn({k, c2});
  w["post_quant_conv.weight"] = at::randn({c1, c2, 1, 1}) / std::sqrt(double(c2));
  w["post_quant_conv.bias"] = at::randn({c1}) * 0.02;
  for (int i = 0; i < 2; ++i) {
    const std::string b = "post_conv." + std::to_string(i) + ".";
    for (const char* n : {"norm1", "norm2"}) {
      w[b + n + ".weight"] = 1 + 0.1 * at::randn({c1});
      w[b + n + ".bias"] = at::randn({c1}) * 0.02;
    }
    for (const char* n : {"conv1", "conv2"}) {
      w[b + n + ".weight"] = at::randn({c1, c1, 3, 3}) / std::sqrt(9.0 * c1);
      w[b + n + ".bias"] = at::randn({c1}) * 0.02;
    }
  }
  return w;
}

std::string write_vq(const TempDir& dir, const std::string& name, const std::map<std::string, at::Tensor>& w,
                     int64_t c1, int64_t c2, int64_t k) {
  auto folder = dir.path() / name;
  std::filesystem::create_directories(folder);
  save_safetensors((folder / "model.safetensors").string(), w);
  std::ofstream(folder / "config.json") << "{\"z_channels\": " << c1 << ", \"codebook_dim\": " << c2
                                         << ", \"codebook_size\": " << k << "}";
  return folder.string();
}

// Decoder half in plain ops, from xomni.md §2.3: raw rows, 1x1 conv as a matmul, 2 x (GN, erf GELU,
// 3x3 conv) residual blocks.
at::Tensor reference_decode(std::map<std::string, at::Tensor> w, const at::Tensor& codes, int64_t h, int64_t wd) {
  for (auto& [k, v] : w) v = v.to(at::kDouble);
  const int64_t c1 = w["post_quant_conv.weight"].size(0);
  at::Tensor e = w["quantize.embedding.weight"].index_select(0, codes);                     // [h*w, C2]
  at::Tensor z = e.matmul(w["post_quant_conv.weight"].flatten(1).t()) + w["post_quant_conv.bias"];
  z = z.t().contiguous().view({1, c1, h, wd});
  auto gn = [&](const at::Tensor& x, const at::Tensor& g, const at::Tensor& b) {
    at::Tensor xg = x.view({1, 32, -1});
    at::Tensor mu = xg.mean(-1, true), var = (xg - mu).pow(2).mean(-1, true);
    return ((xg - mu) / at::sqrt(var + 1e-5)).view_as(x) * g.view({1, -1, 1, 1}) + b.view({1, -1, 1, 1});
  };
  auto gelu = [](const at::Tensor& x) { return 0.5 * x * (1 + at::erf(x / std::sqrt(2.0))); };
  for (int i = 0; i < 2; ++i) {
    const std::string b = "post_conv." + std::to_string(i) + ".";
    at::Tensor y = gelu(gn(z, w[b + "norm1.weight"], w[b + "norm1.bias"]));
    y = at::conv2d(y, w[b + "conv1.weight"], w[b + "conv1.bias"], {1, 1}, {1, 1});
    y = gelu(gn(y, w[b + "norm2.weight"], w[b + "norm2.bias"]));
    y = at::conv2d(y, w[b + "conv2.weight"], w[b + "conv2.bias"], {1, 1}, {1, 1});
    z = z + y;
  }
  return z.flatten(2)[0].t().to(at::kFloat);  // [h*w, C1]
}
}  // namespace

TEST(SiglipVQ, RoundTripRecoversCodesAndDecodesThem) {
  // quant_conv = identity: features equal to (scaled) codebook rows must come back as those codes.
  TempDir dir;
  const int64_t c = 64, k = 40, h = 3, wd = 4;
  auto w = make_vq(c, c, k, 11);
  w["quant_conv.weight"] = at::eye(c).view({c, c, 1, 1});
  w["quant_conv.bias"] = at::zeros({c});
  auto vq = SiglipVQ::load(write_vq(dir, "vq", w, c, c, k));
  at::Tensor want = at::tensor({5, 0, 39, 7, 7, 12, 1, 30, 2, 22, 8, 19}, at::kLong);
  at::Tensor feats = w["quantize.embedding.weight"].index_select(0, want) * 3.5;  // scale is irrelevant
  at::Tensor codes = vq.encode(feats, h, wd);
  ASSERT_EQ(codes.sizes(), at::IntArrayRef({h * wd}));
  EXPECT_TRUE(at::equal(codes, want));
  at::Tensor dec = vq.decode(codes, h, wd);
  ASSERT_EQ(dec.sizes(), at::IntArrayRef({h * wd, c}));
  EXPECT_LT((dec - reference_decode(w, want, h, wd)).abs().max().item<double>(), 1e-4);
  // Batched form agrees with the unbatched one.
  EXPECT_TRUE(at::equal(vq.encode(feats.unsqueeze(0), h, wd)[0], codes));
}

TEST(SiglipVQ, ImageToCodesToFeaturesOnTinyModels) {
  TempDir dir;
  TinyViT t = make_vit(false);
  auto vit = SiglipViT::load(write_model(dir, "vit", t, t.w));
  auto w = make_vq(t.d, 32, 50, 12);
  auto vq = SiglipVQ::load(write_vq(dir, "vq", w, t.d, 32, 50));
  at::manual_seed(5);
  at::Tensor img = at::rand({1, 3, 12, 28}) * 2 - 1;  // 3 x 7 tokens
  at::Tensor feats = vit.forward(img);
  at::Tensor codes = vq.encode(feats, 3, 7);
  ASSERT_EQ(codes.sizes(), at::IntArrayRef({1, 21}));
  EXPECT_GE(codes.min().item<int64_t>(), 0);
  EXPECT_LT(codes.max().item<int64_t>(), 50);
  // Codes are the argmax cosine between quant_conv(features) and the codebook rows.
  at::Tensor z = feats[0].matmul(w["quant_conv.weight"].flatten(1).t()) + w["quant_conv.bias"];
  at::Tensor cos = at::cosine_similarity(z.unsqueeze(1), w["quantize.embedding.weight"].unsqueeze(0), -1);
  EXPECT_TRUE(at::equal(codes[0], cos.argmax(1)));
  at::Tensor dec = vq.decode(codes, 3, 7);
  ASSERT_EQ(dec.sizes(), at::IntArrayRef({1, 21, t.d}));
  EXPECT_LT((dec[0] - reference_decode(w, codes[0], 3, 7)).abs().max().item<double>(), 1e-4);
}

TEST(SiglipVQ, BadWeightsAndInputsAreErrors) {
  TempDir dir;
  auto w = make_vq(64, 32, 50, 13);
  // The codebook width disagrees with the config: a wrong weight shape names the key.
  try {
    SiglipVQ::load(write_vq(dir, "cfg", w, 64, 48, 50));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quant_conv.weight"), std::string::npos) << e.what();
  }
  auto extra = w;
  extra["quantize.ema.weight"] = at::zeros({2});
  EXPECT_THROW(SiglipVQ::load(write_vq(dir, "extra", extra, 64, 32, 50)), Error);  // strict=True
  auto missing = w;
  missing.erase("post_conv.1.norm2.bias");
  EXPECT_THROW(SiglipVQ::load(write_vq(dir, "missing", missing, 64, 32, 50)), Error);

  auto vq = SiglipVQ::load(write_vq(dir, "ok", w, 64, 32, 50));
  EXPECT_THROW(vq.encode(at::zeros({1, 14, 64}), 3, 5), Error);  // h*w mismatch
  EXPECT_THROW(vq.encode(at::zeros({1, 15, 63}), 3, 5), Error);  // channel mismatch
  EXPECT_THROW(vq.decode(at::full({15}, 50, at::kLong), 3, 5), Error);  // code out of range
  EXPECT_THROW(vq.decode(at::full({15}, -1, at::kLong), 3, 5), Error);
  EXPECT_THROW(vq.decode(at::zeros({15}), 3, 5), Error);  // float codes
  EXPECT_THROW(vq.decode(at::zeros({16}, at::kLong), 3, 5), Error);
}

// ---- any-resolution size rules --------------------------------------------------------------------

TEST(Anyres, TargetSizesFollowTheRules) {
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ(anyres_target_size(1152, 1152), P(1152, 1152));
  EXPECT_EQ(anyres_target_size(1024, 768), P(1024, 768));    // inside the band: only snapped
  EXPECT_EQ(anyres_target_size(200, 300), P(384, 576));      // short side up to 384
  EXPECT_EQ(anyres_target_size(2000, 1000), P(1152, 576));   // long side down to 1152
  EXPECT_EQ(anyres_target_size(128, 384), P(384, 1152));     // aspect exactly 3 is allowed
  // Python round() is half-to-even: 392/16 = 24.5 -> 24, 424/16 = 26.5 -> 26, 440/16 = 27.5 -> 28.
  EXPECT_EQ(anyres_target_size(392, 400), P(384, 400));
  EXPECT_EQ(anyres_target_size(424, 440), P(416, 448));
  // Scaled sizes are floats: 500 x 350 -> 500 * 384/350 = 548.57 -> 34 patches.
  EXPECT_EQ(anyres_target_size(500, 350), P(544, 384));
}

TEST(Anyres, RejectsTooSmallAndTooElongatedImagesNamingTheRule) {
  try {
    anyres_target_size(100, 200);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("min_short_size"), std::string::npos) << e.what();
  }
  try {
    anyres_target_size(400, 1300);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_aspect_ratio"), std::string::npos) << e.what();
  }
  AnyresTransform off;
  off.filtering = false;
  EXPECT_NO_THROW(anyres_target_size(100, 400, off));
  EXPECT_THROW(anyres_target_size(0, 400, off), Error);
}

// ---- any-resolution preprocessing and the whole tokenizer -----------------------------------------

namespace {
Image random_image(int w, int h, uint64_t seed) {
  at::manual_seed(seed);
  return image_from_tensor(at::randint(0, 256, {h, w, 3}, at::kByte));
}
}  // namespace

TEST(Anyres, PreprocessResizesBicubicAndScalesToPlusMinusOne) {
  Image img = random_image(200, 300, 21);
  at::Tensor x = anyres_preprocess(img);
  ASSERT_EQ(x.sizes(), at::IntArrayRef({1, 3, 576, 384}));  // W 200 -> 384, H 300 -> 576
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  // Pixel (y, x) channel c is (u8 / 255 - 0.5) / 0.5 of the PIL-bicubic resized image.
  at::Tensor u8 = image_to_tensor(resize(img, 384, 576, Resample::Bicubic)).to(at::kDouble);
  at::Tensor want = ((u8 / 255.0 - 0.5) / 0.5).permute({2, 0, 1}).unsqueeze(0);
  EXPECT_LT((x.to(at::kDouble) - want).abs().max().item<double>(), 1e-6);
}

TEST(Anyres, PreprocessRejectsBadImagesNamingTheRule) {
  auto expect_rule = [](const Image& img, const std::string& rule) {
    try {
      anyres_preprocess(img);
      FAIL() << "expected an Error mentioning " << rule;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(rule), std::string::npos) << e.what();
    }
  };
  expect_rule(random_image(100, 300, 1), "min_short_size");     // too small
  expect_rule(random_image(1000, 200, 2), "max_aspect_ratio");  // too elongated (5:1)
  Image grey;
  grey.width = 256;
  grey.height = 256;
  grey.rgb.assign(256 * 256, 100);  // one channel
  expect_rule(grey, "grey");
}

TEST(SiglipVQTokenizer, EncodesAnImageAndDecodesItsCodes) {
  // Tiny ViT with patch 16 so that the real transform applies: 150 x 130 -> 448 x 384 -> 28 x 24.
  TempDir dir;
  TinyViT t = make_vit(false);
  t.patch = 16;
  t.w["patch_embed.proj.weight"] = at::randn({t.d, 3, 16, 16}) / 16.0;
  SiglipViT vit = SiglipViT::load(write_model(dir, "vit", t, t.w));
  auto w = make_vq(t.d, 32, 50, 14);
  SiglipVQTokenizer tok(vit, SiglipVQ::load(write_vq(dir, "vq", w, t.d, 32, 50)));
  Image img = random_image(150, 130, 22);
  auto codes = tok.encode(img);
  EXPECT_EQ(codes.h, 24);
  EXPECT_EQ(codes.w, 28);
  ASSERT_EQ(codes.codes.sizes(), at::IntArrayRef({24 * 28}));
  // Same codes as running the pieces by hand.
  at::Tensor feats = vit.forward(anyres_preprocess(img));
  EXPECT_TRUE(at::equal(codes.codes, tok.vq().encode(feats, 24, 28)[0]));
  at::Tensor dec = tok.decode(codes.codes, codes.h, codes.w);
  ASSERT_EQ(dec.sizes(), at::IntArrayRef({24 * 28, t.d}));
  EXPECT_LT((dec - reference_decode(w, codes.codes, 24, 28)).abs().max().item<double>(), 1e-4);
  // A projector of another width does not fit this ViT.
  auto w2 = make_vq(64, 32, 50, 15);
  EXPECT_THROW(SiglipVQTokenizer(vit, SiglipVQ::load(write_vq(dir, "vq64", w2, 64, 32, 50))), Error);
}
