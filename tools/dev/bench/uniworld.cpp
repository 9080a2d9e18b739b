// Bench case uniworld: the time of each stage of a UniWorld-V1 editing request (one reference
// image) on random weights: VLM prefill, SigLIP, T5, CLIP, one DiT step, VAE decode, and the share
// of each in a whole request of `steps` DiT steps. preset=small (CPU default) is a narrow model
// with the real vocabulary and tokenizers; preset=full (CUDA default) has the real shapes
// (Qwen2.5-VL-7B, so400m SigLIP, FLUX.1-dev DiT, T5-XXL, CLIP-L, FLUX VAE; ~50 GB of bf16 files
// are written to tmp= first).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <ATen/ATen.h>

#include "../tiny/flux_weights.h"
#include "../tiny/uniworld_weights.h"
#include "bench.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/pipelines/uniworld.h"
#include "sampling/latents.h"

namespace fs = std::filesystem;
using namespace omniflux::tiny;

namespace {

fs::path find_tokenizers(const omniflux::bench::BenchContext& ctx) {
  if (ctx.args.count("tokenizers")) return ctx.arg("tokenizers", "");
  if (const char* env = std::getenv("OMNIFLUX_TOKENIZERS")) return env;
  std::error_code ec;
  fs::path exe = fs::canonical("/proc/self/exe", ec);
  for (fs::path p = exe.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path())
    if (fs::is_directory(p / "tests/fixtures/tokenizers")) return p / "tests/fixtures/tokenizers";
  return fs::current_path() / "tests/fixtures/tokenizers";
}

struct Scratch {
  fs::path dir;
  explicit Scratch(const omniflux::bench::BenchContext& ctx) {
    std::random_device rd;
    dir = fs::path(ctx.arg("tmp", fs::temp_directory_path().string())) / ("omniflux-bench-uniworld-" + std::to_string(rd()));
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

void write_json(const fs::path& p, const nlohmann::json& j) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << j.dump(2);
}

void place_file(const fs::path& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

}  // namespace

OMNIFLUX_BENCH_CASE(uniworld,
                    "UniWorld-V1 editing request, ms per stage and share; args: preset=small|full (CPU small, CUDA "
                    "full) size=256 (output side) steps=28 ref=448 (reference image side) tmp=DIR tokenizers=DIR") {
  const bool full = ctx.arg("preset", ctx.rt.torch_device().is_cuda() ? "full" : "small") == "full";
  const int64_t side = ctx.arg_int("size", full ? 1024 : 256), steps = ctx.arg_int("steps", 28);
  const int ref_side = static_cast<int>(ctx.arg_int("ref", 448));
  UniWorldShape s;
  ClipShape clip;
  T5Shape t5;
  VaeShape vae;
  if (full) {
    s.qwen = {152064, 3584, 18944, 28, 28, 4, {16, 24, 24}, 32, 1280, 16, 3420, 112, {7, 15, 23, 31}};
    s.siglip = {1152, 4304, 27, 16, 512, 16};
    s.dit = flux_dev_dit();
    s.task_head_hidden = 10240;
    clip = clip_l();
    t5 = t5_xxl();
    vae = flux_dev_vae();
  } else {
    s.qwen = {152064, 256, 512, 4, 4, 2, {8, 12, 12}, 4, 128, 4, 256, 112, {3}};
    s.siglip = {128, 256, 4, 4, 256, 16};
    s.dit = {4, 32, 2, 4, 256, 128, 64, {8, 12, 12}};
    clip = {49408, 128, 256, 4, 4};
    t5 = {32128, 256, 64, 4, 512, 4, 32};
    vae = {{32, 64, 128, 128}, 32, 1, 16, 1024};
  }
  s.dit.joint = t5.d;
  s.dit.pooled = clip.hidden;

  Scratch root(ctx);
  const fs::path tok = find_tokenizers(ctx);
  const auto dtype = ctx.rt.compute_dtype();
  write_uniworld_folder(root.dir / "uniworld-v1", s, 1, dtype);
  place_file(tok / "qwen2/tokenizer.json", root.dir / "uniworld-v1/tokenizer.json");
  write_siglip_folder(root.dir / "siglip2", s.siglip, 2, dtype);
  const fs::path f = root.dir / "flux.1-dev";
  write_json(f / "model_index.json", {{"_class_name", "FluxPipeline"}});
  write_json(f / "scheduler/scheduler_config.json",
             {{"base_image_seq_len", 256}, {"base_shift", 0.5}, {"max_image_seq_len", 4096}, {"max_shift", 1.15},
              {"num_train_timesteps", 1000}, {"shift", 3.0}, {"use_dynamic_shifting", true}});
  write_json(f / "text_encoder/config.json", clip_config(clip));
  write_json(f / "text_encoder_2/config.json", t5_config(t5));
  write_json(f / "vae/config.json", vae_config(vae));
  {
    TinyWeights w(3, dtype);
    clip_weights(w, clip);
    w.save(f / "text_encoder/model.safetensors");
  }
  {
    TinyWeights w(4, dtype);
    t5_weights(w, t5);
    w.save(f / "text_encoder_2/model.safetensors");
  }
  {
    TinyWeights w(5, dtype);
    vae_weights(w, vae);
    w.save(f / "vae/diffusion_pytorch_model.safetensors");
  }
  for (const char* n : {"vocab.json", "merges.txt"}) place_file(tok / "clip" / n, f / "tokenizer" / n);
  place_file(tok / "t5/spiece.model", f / "tokenizer_2/spiece.model");

  auto pipe = omniflux::UniWorldPipeline::load((root.dir / "uniworld-v1").string(), f.string(),
                                               (root.dir / "siglip2").string(), ctx.rt);
  omniflux::Image ref{ref_side, ref_side, std::vector<uint8_t>(static_cast<size_t>(ref_side) * ref_side * 3)};
  for (size_t i = 0; i < ref.rgb.size(); ++i) ref.rgb[i] = static_cast<uint8_t>((i * 131) % 251);
  const std::string prompt = "Translate this photo into a Studio Ghibli-style illustration, holding true to the original composition and movement.";

  auto vp = pipe.build_prompt(prompt, {ref});
  at::Tensor hidden;
  const double vlm_ms = ctx.time_ms([&] { hidden = pipe.vlm_hidden(vp); });
  at::Tensor px = pipe.siglip_pixels({ref}), sig;
  const double siglip_ms = ctx.time_ms([&] { sig = pipe.siglip_features(px); });
  at::Tensor t5_ids = pipe.t5_ids(prompt, 256), clip_ids = pipe.clip_ids(prompt), t5_out, pooled;
  const double t5_ms = ctx.time_ms([&] { t5_out = pipe.flux().text_encoder_2().forward(t5_ids); });
  const double clip_ms = ctx.time_ms([&] { pooled = pipe.flux().text_encoder().forward(clip_ids).pooler_output; });
  auto ts = pipe.assemble(vp.ids, hidden, sig, t5_out);

  const auto& dit = pipe.flux().transformer();
  const int64_t h = omniflux::flux_latent_size(side), w = omniflux::flux_latent_size(side);
  const auto dev = ctx.rt.torch_device();
  omniflux::FluxDiTInputs in;
  in.hidden_states = omniflux::pack_latents(at::randn({1, 16, h, w}).to(dev, dit.dtype()));
  in.encoder_hidden_states = ts.prompt_embeds.to(dit.dtype());
  in.pooled_projections = pooled.to(dit.dtype());
  in.timestep = at::full({1}, 0.5, at::TensorOptions().dtype(dit.dtype()).device(dev));
  in.guidance = at::full({1}, 3.5, at::TensorOptions().dtype(at::kFloat).device(dev));
  in.img_ids = omniflux::latent_image_ids(h, w).to(dev);
  in.txt_ids = ts.txt_ids.to(dev);
  at::Tensor v;
  const double dit_ms = ctx.time_ms([&] { v = dit.forward(in); });
  at::Tensor img;
  const double vae_ms = ctx.time_ms([&] { img = pipe.flux().decode(v, side, side); });

  const double total = vlm_ms + siglip_ms + t5_ms + clip_ms + steps * dit_ms + vae_ms;
  const nlohmann::json shape = {{"preset", full ? "full" : "small"}, {"size", side}, {"ref", ref_side},
                                {"vlm_tokens", vp.ids.size(1)}, {"text_tokens", ts.prompt_embeds.size(1)},
                                {"image_tokens", in.hidden_states.size(1)}, {"steps", steps}};
  const std::pair<const char*, double> stages[] = {{"vlm_prefill", vlm_ms}, {"siglip", siglip_ms}, {"t5", t5_ms},
                                                   {"clip", clip_ms},       {"dit_step", dit_ms},   {"vae_decode", vae_ms}};
  for (const auto& [name, ms] : stages) {
    const double spent = std::string(name) == "dit_step" ? steps * ms : ms;
    ctx.report({{"shape", shape}, {"metric", name}, {"value", ms}, {"unit", "ms"}, {"share", spent / total}});
  }
  ctx.report({{"shape", shape}, {"metric", "request"}, {"value", total}, {"unit", "ms"}, {"share", 1.0}});
}
