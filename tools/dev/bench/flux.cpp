// Bench cases of the FLUX.1-dev components on random weights: one DiT forward (with its FLOP
// count), a VAE decode, and the two text encoders. Defaults are small CPU configs; preset=flux-dev
// gives the real FLUX.1-dev shapes (a GPU run: the DiT's random weights are drawn on the device).
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <ATen/ATen.h>

#include "../tiny/flux_weights.h"
#include "bench.h"
#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/models/clip_text.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/flux_vae.h"
#include "omniflux/models/t5_encoder.h"
#include "sampling/latents.h"

namespace fs = std::filesystem;
using namespace omniflux::tiny;

namespace {

// A temporary model folder (config.json + random weights in the compute dtype), removed at exit.
struct TempModel {
  fs::path dir;
  TempModel(const omniflux::bench::BenchContext& ctx, const nlohmann::json& config,
            const std::function<void(TinyWeights&)>& fill, const char* file) {
    std::random_device rd;
    dir = fs::path(ctx.arg("tmp", fs::temp_directory_path().string())) /
          ("omniflux-bench-" + ctx.case_name + "-" + std::to_string(rd()));
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << config.dump(2);
    TinyWeights w(0, ctx.rt.compute_dtype());
    fill(w);
    w.save(dir / file);
  }
  ~TempModel() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

bool flux_dev(const omniflux::bench::BenchContext& ctx) { return ctx.arg("preset", "small") == "flux-dev"; }

// A DiT of shape `s` with random weights. On CUDA they are drawn on the device and served from
// memory (a full FLUX.1-dev would take minutes to draw on the CPU and write); on the CPU they go
// through a temporary file and the normal loader, as the model is used.
omniflux::FluxTransformer random_dit(const omniflux::bench::BenchContext& ctx, const FluxDitShape& s) {
  if (ctx.rt.torch_device().is_cuda()) {
    TinyWeights w(0, ctx.rt.compute_dtype(), ctx.rt.torch_device());
    flux_dit_weights(w, s);
    omniflux::WeightStore store(omniflux::Checkpoint::from_tensors(w.tensors(), "random FLUX DiT"), ctx.rt);
    omniflux::FluxTransformer m(omniflux::FluxDiTConfig::from_config(omniflux::Config::parse(flux_dit_config(s).dump(), "random")),
                                store.root());
    store.finish();
    return m;
  }
  TempModel tm(ctx, flux_dit_config(s), [&](TinyWeights& w) { flux_dit_weights(w, s); },
               "diffusion_pytorch_model.safetensors");
  return omniflux::FluxTransformer::load(tm.dir.string(), ctx.rt);
}

}  // namespace

OMNIFLUX_BENCH_CASE(flux_dit_forward,
                    "one FLUX DiT forward, ms and TFLOP/s; args: preset=small|flux-dev width= height= txt= "
                    "heads= head_dim= layers= single= (small: 4x32, 2+4 blocks, 256^2, 64 text tokens)") {
  FluxDitShape s = flux_dev(ctx) ? flux_dev_dit() : FluxDitShape{4, 32, 2, 4, 128, 64, 64, {4, 14, 14}};
  s.heads = ctx.arg_int("heads", s.heads);
  s.head_dim = ctx.arg_int("head_dim", s.head_dim);
  s.layers = ctx.arg_int("layers", s.layers);
  s.single = ctx.arg_int("single", s.single);
  if (s.head_dim != 32 && s.head_dim != 128) {
    const int64_t a0 = s.head_dim / 8;  // FLUX proportions (16, 56, 56) of 128
    s.axes = {a0, (s.head_dim - a0) / 2, (s.head_dim - a0) / 2};
  }
  const int64_t width = ctx.arg_int("width", flux_dev(ctx) ? 1024 : 256);
  const int64_t height = ctx.arg_int("height", flux_dev(ctx) ? 1024 : 256);
  const int64_t txt = ctx.arg_int("txt", flux_dev(ctx) ? 512 : 64);
  auto model = random_dit(ctx, s);
  const auto dev = ctx.rt.torch_device();
  const auto dt = ctx.rt.compute_dtype();
  const int64_t h = omniflux::flux_latent_size(height), w = omniflux::flux_latent_size(width);
  omniflux::FluxDiTInputs in;
  in.hidden_states = omniflux::pack_latents(at::randn({1, 16, h, w})).to(dev, dt);
  in.encoder_hidden_states = at::randn({1, txt, s.joint}).to(dev, dt);
  in.pooled_projections = at::randn({1, s.pooled}).to(dev, dt);
  in.timestep = at::full({1}, 0.5).to(dev, dt);
  in.guidance = at::full({1}, 3.5).to(dev);
  in.img_ids = omniflux::latent_image_ids(h, w).to(dev);
  in.txt_ids = omniflux::text_ids(txt).to(dev);
  const double ms = ctx.time_ms([&] { model.forward(in); });
  const int64_t n = in.hidden_states.size(1);
  const double flops = omniflux::flux_dit_flops(model.config(), n, txt);
  std::ostringstream shape;
  shape << "D=" << s.heads * s.head_dim << " blocks=" << s.layers << "+" << s.single << " " << width << "x" << height
        << " N=" << n << " T=" << txt;
  ctx.report({{"shape", shape.str()},
              {"metric", "forward"},
              {"value", ms},
              {"unit", "ms"},
              {"flops", flops},
              {"tflops_per_s", flops / (ms * 1e-3) / 1e12},
              {"flop_formula", "(layers+single) * (2L(4D^2 + 2DF) + 4L^2 D) + 2N D (in+out) + 2T D joint; "
                               "L = N + T, F = 4D"}});
}

OMNIFLUX_BENCH_CASE(flux_vae_decode,
                    "FLUX VAE decode, ms; args: preset=small|flux-dev width= height= tiled=0|1 "
                    "(small: channels 32,64,64,64, 256^2)") {
  VaeShape s = flux_dev(ctx) ? flux_dev_vae() : VaeShape{{32, 64, 64, 64}, 16, 2, 16, 1024};
  const int64_t width = ctx.arg_int("width", flux_dev(ctx) ? 1024 : 256);
  const int64_t height = ctx.arg_int("height", flux_dev(ctx) ? 1024 : 256);
  const bool tiled = ctx.arg_int("tiled", 0) != 0;
  TempModel tm(ctx, vae_config(s), [&](TinyWeights& w) { vae_weights(w, s); }, "diffusion_pytorch_model.safetensors");
  auto vae = omniflux::FluxVae::load(tm.dir.string(), ctx.rt);
  at::Tensor z = at::randn({1, 16, height / 8, width / 8}).to(ctx.rt.torch_device(), ctx.rt.compute_dtype());
  const double ms = ctx.time_ms([&] { tiled ? vae.decode_tiled(z) : vae.decode(z); });
  std::ostringstream shape;
  shape << "channels=" << s.ch[0] << ".." << s.ch.back() << " " << width << "x" << height << (tiled ? " tiled" : "");
  ctx.report({{"shape", shape.str()}, {"metric", "decode"}, {"value", ms}, {"unit", "ms"}});
}

OMNIFLUX_BENCH_CASE(flux_text_encoders,
                    "CLIP-L pooled + T5 encoder forward, ms each; args: preset=small|flux-dev t5_len= "
                    "(small: CLIP 256x4, T5 256x4, 128 T5 tokens)") {
  ClipShape cs = flux_dev(ctx) ? clip_l() : ClipShape{49408, 256, 1024, 4, 4};
  T5Shape ts = flux_dev(ctx) ? t5_xxl() : T5Shape{32128, 256, 64, 4, 1024, 4, 32};
  const int64_t t5_len = ctx.arg_int("t5_len", flux_dev(ctx) ? 512 : 128);
  TempModel tc(ctx, clip_config(cs), [&](TinyWeights& w) { clip_weights(w, cs); }, "model.safetensors");
  auto clip = omniflux::ClipTextModel::load(tc.dir.string(), ctx.rt);
  at::Tensor clip_ids = at::randint(0, 49406, {1, 77}, at::kLong);
  const double clip_ms = ctx.time_ms([&] { clip.forward(clip_ids); });
  ctx.report({{"shape", "CLIP hidden=" + std::to_string(cs.hidden) + " layers=" + std::to_string(cs.layers) + " L=77"},
              {"metric", "clip_forward"}, {"value", clip_ms}, {"unit", "ms"}});
  TempModel tt(ctx, t5_config(ts), [&](TinyWeights& w) { t5_weights(w, ts); }, "model.safetensors");
  auto t5 = omniflux::T5Encoder::load(tt.dir.string(), ctx.rt);
  at::Tensor t5_ids = at::randint(0, 32000, {1, t5_len}, at::kLong);
  const double t5_ms = ctx.time_ms([&] { t5.forward(t5_ids); });
  ctx.report({{"shape", "T5 d_model=" + std::to_string(ts.d) + " layers=" + std::to_string(ts.layers) +
                            " L=" + std::to_string(t5_len)},
              {"metric", "t5_forward"}, {"value", t5_ms}, {"unit", "ms"}});
}
