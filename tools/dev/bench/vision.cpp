// Bench cases for the vision encoders: the SigLIP tower UniWorld runs (classic SigLIP2 FixRes at
// 512^2, 1024 tokens) and X-Omni's SigLIP-VQ tokenizer (ViT-g at 1152^2, 5184 tokens, plus the
// quantizer and the decoder half). Random weights of the asked shape are written to a temporary
// safetensors file in the compute dtype and loaded through the normal loaders. Defaults: the real
// sizes on CUDA, small widths/depths on CPU (the token counts stay real).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <ATen/ATen.h>

#include "bench.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/siglip2.h"
#include "omniflux/models/siglip_vq.h"

namespace fs = std::filesystem;

namespace {

// A folder under the temp dir that removes itself.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("omniflux-bench-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct RandomWeights {
  c10::ScalarType dtype;
  std::map<std::string, at::Tensor> w;
  void add(const std::string& name, std::vector<int64_t> shape, double std) {
    w[name] = (at::randn(shape) * std).to(dtype);
  }
};

bool on_cuda(const omniflux::bench::BenchContext& ctx) { return ctx.rt.torch_device().is_cuda(); }

}  // namespace

OMNIFLUX_BENCH_CASE(siglip2_vision,
                    "SigLIP tower as UniWorld runs it (classic, Conv2d patches), images/s; args: image=512 "
                    "batch=1 hidden= inter= layers= heads= (CUDA default so400m 1152/4304/27/16; CPU 256/1024/4/4)") {
  const bool cuda = on_cuda(ctx);
  const int64_t image = ctx.arg_int("image", 512), batch = ctx.arg_int("batch", 1), patch = 16;
  const int64_t d = ctx.arg_int("hidden", cuda ? 1152 : 256), inter = ctx.arg_int("inter", cuda ? 4304 : 1024);
  const int64_t layers = ctx.arg_int("layers", cuda ? 27 : 4), heads = ctx.arg_int("heads", cuda ? 16 : 4);
  const int64_t tokens = (image / patch) * (image / patch);
  ScratchDir dir;
  RandomWeights r{ctx.rt.compute_dtype()};
  const std::string v = "vision_model.";
  r.add(v + "embeddings.patch_embedding.weight", {d, 3, patch, patch}, 1.0 / std::sqrt(3.0 * patch * patch));
  r.add(v + "embeddings.patch_embedding.bias", {d}, 0.02);
  r.add(v + "embeddings.position_embedding.weight", {tokens, d}, 0.02);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = v + "encoder.layers." + std::to_string(i) + ".";
    for (const char* n : {"layer_norm1", "layer_norm2"}) {
      r.add(p + n + ".weight", {d}, 1.0);
      r.add(p + n + ".bias", {d}, 0.02);
    }
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      r.add(p + "self_attn." + n + ".weight", {d, d}, 1.0 / std::sqrt(double(d)));
      r.add(p + "self_attn." + n + ".bias", {d}, 0.02);
    }
    r.add(p + "mlp.fc1.weight", {inter, d}, 1.0 / std::sqrt(double(d)));
    r.add(p + "mlp.fc1.bias", {inter}, 0.02);
    r.add(p + "mlp.fc2.weight", {d, inter}, 1.0 / std::sqrt(double(inter)));
    r.add(p + "mlp.fc2.bias", {d}, 0.02);
  }
  r.add(v + "post_layernorm.weight", {d}, 1.0);
  r.add(v + "post_layernorm.bias", {d}, 0.02);
  omniflux::save_safetensors((dir.path / "model.safetensors").string(), r.w);
  r.w.clear();
  std::ofstream(dir.path / "config.json")
      << "{\"vision_config\": {\"hidden_size\": " << d << ", \"intermediate_size\": " << inter
      << ", \"num_hidden_layers\": " << layers << ", \"num_attention_heads\": " << heads
      << ", \"patch_size\": " << patch << ", \"image_size\": " << image << ", \"vision_use_head\": false}}";
  auto model = omniflux::SiglipVisionModel::load(dir.path.string(), ctx.rt);
  at::Tensor px = at::rand({batch, 3, image, image}, at::TensorOptions().device(ctx.rt.torch_device())) * 2 - 1;
  const double ms = ctx.time_ms([&] { (void)model.forward(px); });
  ctx.report({{"shape", {{"image", image}, {"batch", batch}, {"tokens", tokens}, {"hidden", d}, {"layers", layers}}},
              {"metric", "forward"}, {"value", 1000.0 * batch / ms}, {"unit", "images/s"}, {"ms", ms}});
}

OMNIFLUX_BENCH_CASE(siglip_vq_vit,
                    "X-Omni SigLIP-VQ: ViT-g encode + quantize, and the decoder half, images/s; args: image=1152 "
                    "hidden= mlp= layers= heads= codebook= dim= (CUDA default 1536/6144/40/16, 16384 x 2048; "
                    "CPU 128/512/2/4, 1024 x 256)") {
  const bool cuda = on_cuda(ctx);
  const int64_t image = ctx.arg_int("image", 1152), patch = 16, grid = ctx.arg_int("pos_grid", cuda ? 128 : 24);
  const int64_t d = ctx.arg_int("hidden", cuda ? 1536 : 128), mlp = ctx.arg_int("mlp", cuda ? 6144 : 512);
  const int64_t layers = ctx.arg_int("layers", cuda ? 40 : 2), heads = ctx.arg_int("heads", cuda ? 16 : 4);
  const int64_t k = ctx.arg_int("codebook", cuda ? 16384 : 1024), c2 = ctx.arg_int("dim", cuda ? 2048 : 256);
  const int64_t side = image / patch;
  ScratchDir dir;
  fs::create_directories(dir.path / "vit");
  fs::create_directories(dir.path / "vq");
  {
    RandomWeights r{ctx.rt.compute_dtype()};
    r.add("patch_embed.proj.weight", {d, 3, patch, patch}, 1.0 / std::sqrt(3.0 * patch * patch));
    r.add("patch_embed.proj.bias", {d}, 0.02);
    r.add("pos_embed", {1, grid * grid, d}, 0.02);
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = "blocks." + std::to_string(i) + ".";
      for (const char* n : {"norm1", "norm2"}) {
        r.add(p + n + ".weight", {d}, 1.0);
        r.add(p + n + ".bias", {d}, 0.02);
      }
      r.add(p + "attn.qkv.weight", {3 * d, d}, 1.0 / std::sqrt(double(d)));
      r.add(p + "attn.qkv.bias", {3 * d}, 0.02);
      r.add(p + "attn.proj.weight", {d, d}, 1.0 / std::sqrt(double(d)));
      r.add(p + "attn.proj.bias", {d}, 0.02);
      r.add(p + "mlp.fc1.weight", {mlp, d}, 1.0 / std::sqrt(double(d)));
      r.add(p + "mlp.fc1.bias", {mlp}, 0.02);
      r.add(p + "mlp.fc2.weight", {d, mlp}, 1.0 / std::sqrt(double(mlp)));
      r.add(p + "mlp.fc2.bias", {d}, 0.02);
    }
    omniflux::save_safetensors((dir.path / "vit" / "model.safetensors").string(), r.w);
    std::ofstream(dir.path / "vit" / "config.json")
        << "{\"hidden_size\": " << d << ", \"intermediate_size\": " << mlp << ", \"num_hidden_layers\": " << layers
        << ", \"num_attention_heads\": " << heads << ", \"patch_size\": " << patch << "}";
  }
  {
    RandomWeights r{ctx.rt.compute_dtype()};
    r.add("quant_conv.weight", {c2, d, 1, 1}, 1.0 / std::sqrt(double(d)));
    r.add("quant_conv.bias", {c2}, 0.02);
    r.add("quantize.embedding.weight", {k, c2}, 1.0);
    r.add("post_quant_conv.weight", {d, c2, 1, 1}, 1.0 / std::sqrt(double(c2)));
    r.add("post_quant_conv.bias", {d}, 0.02);
    for (int i = 0; i < 2; ++i) {
      const std::string p = "post_conv." + std::to_string(i) + ".";
      for (const char* n : {"norm1", "norm2"}) {
        r.add(p + n + ".weight", {d}, 1.0);
        r.add(p + n + ".bias", {d}, 0.02);
      }
      for (const char* n : {"conv1", "conv2"}) {
        r.add(p + n + ".weight", {d, d, 3, 3}, 1.0 / std::sqrt(9.0 * d));
        r.add(p + n + ".bias", {d}, 0.02);
      }
    }
    omniflux::save_safetensors((dir.path / "vq" / "model.safetensors").string(), r.w);
    std::ofstream(dir.path / "vq" / "config.json")
        << "{\"z_channels\": " << d << ", \"codebook_size\": " << k << ", \"codebook_dim\": " << c2
        << ", \"num_groups\": " << std::min<int64_t>(32, d) << "}";
  }
  auto vit = omniflux::SiglipViT::load((dir.path / "vit").string(), ctx.rt);
  auto vq = omniflux::SiglipVQ::load((dir.path / "vq").string(), ctx.rt);
  at::Tensor px = at::rand({1, 3, image, image}, at::TensorOptions().device(ctx.rt.torch_device())) * 2 - 1;
  at::Tensor codes;
  const double enc_ms = ctx.time_ms([&] { codes = vq.encode(vit.forward(px), side, side); });
  const double dec_ms = ctx.time_ms([&] { (void)vq.decode(codes, side, side); });
  nlohmann::json shape = {{"image", image}, {"tokens", side * side}, {"hidden", d}, {"layers", layers},
                          {"codebook", {k, c2}}};
  ctx.report({{"shape", shape}, {"metric", "encode"}, {"value", 1000.0 / enc_ms}, {"unit", "images/s"}, {"ms", enc_ms}});
  ctx.report({{"shape", shape}, {"metric", "vq_decode"}, {"value", 1000.0 / dec_ms}, {"unit", "images/s"}, {"ms", dec_ms}});
}
