// FLUX.1-dev text-to-image, after diffusers v0.31 pipeline_flux.py (FluxPipeline.__call__,
// encode_prompt, prepare_latents) and image_processor.py (postprocess).
#include "omniflux/pipelines/flux.h"

#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>

#include "checks.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/io/image_tensor.h"
#include "io/paths.h"
#include "nn/debug.h"
#include "sampling/latents.h"
#include "text/clip_tokenizer.h"
#include "text/t5_tokenizer.h"

namespace fs = std::filesystem;

namespace omniflux {

void flux_check_size(int64_t width, int64_t height) {
  for (auto [name, v] : {std::pair<const char*, int64_t>{"width", width}, {"height", height}})
    if (v < 16 || v > kFluxMaxSide || v % 16 != 0)
      throw Error("invalid output size", std::string("FluxPipeline: ") + name,
                  "a multiple of 16 in [16, " + std::to_string(kFluxMaxSide) + "]", std::to_string(v));
}

struct FluxPipeline::Impl {
  RuntimeOptions rt;
  std::shared_ptr<ResidencyGroup> group;
  Resident<FluxTransformer> transformer;
  Resident<FluxVae> vae;
  Resident<ClipTextModel> clip;
  Resident<T5Encoder> t5;
  FluxDiTConfig dit_cfg;
  int64_t clip_max_positions = 77;
  FlowMatchConfig scheduler;
  std::string folder;
  std::shared_ptr<const text::ClipTokenizer> tokenizer;   // tokenizer/: vocab.json + merges.txt
  std::shared_ptr<const text::T5Tokenizer> tokenizer_2;   // tokenizer_2/: spiece.model
};

namespace {

std::string sub_folder(const std::string& root, const char* name) {
  const std::string p = (fs::path(root) / name).string();
  require_folder(p, std::string("FLUX.1-dev component ") + name);
  return p;
}

FlowMatchConfig load_scheduler(const std::string& folder) {
  Config c = Config::load((fs::path(folder) / "scheduler_config.json").string());
  if (!c.get_bool("use_dynamic_shifting", false))
    throw Error("only dynamic shifting schedulers are supported (FLUX.1-dev)",
                c.source() + ": use_dynamic_shifting", "true", "false");
  if (c.has("time_shift_type") && c.get_string("time_shift_type") != "exponential")
    throw Error("unsupported time shift", c.source() + ": time_shift_type", "exponential", c.get_string("time_shift_type"));
  FlowMatchConfig s;  // the pipeline reads these with .get(key, default)
  s.base_image_seq_len = c.get_size("base_image_seq_len", s.base_image_seq_len);
  s.max_image_seq_len = c.get_size("max_image_seq_len", s.max_image_seq_len);
  // mu is extrapolated from these; exp(mu) must stay finite (flow_match_schedule checks it too).
  s.base_shift = c.get_double("base_shift", s.base_shift, -100, 100);
  s.max_shift = c.get_double("max_shift", s.max_shift, -100, 100);
  c.check(s.max_image_seq_len > s.base_image_seq_len, "max_image_seq_len",
          "> base_image_seq_len " + std::to_string(s.base_image_seq_len), std::to_string(s.max_image_seq_len));
  return s;
}

}  // namespace

FluxPipeline FluxPipeline::load(const std::string& folder, const RuntimeOptions& rt) {
  rt.validate();
  require_file(folder, "model_index.json", "FLUX.1-dev");
  const std::string dir = sub_folder(folder, "transformer");
  check_flux_dit_parallel(FluxDiTConfig::from_config(Config::load(dir)), rt, dir);  // before any weights load
  return load(folder, [dir, rt] { return FluxTransformer::load(dir, rt.on("dit")); }, rt,
              std::make_shared<ResidencyGroup>(rt.offload));
}

FluxPipeline FluxPipeline::load(const std::string& folder, FluxTransformer transformer, const RuntimeOptions& rt) {
  return load(folder, [transformer] { return transformer; }, rt, std::make_shared<ResidencyGroup>(rt.offload));
}

FluxPipeline FluxPipeline::load(const std::string& folder, std::function<FluxTransformer()> transformer,
                                const RuntimeOptions& rt, std::shared_ptr<ResidencyGroup> group,
                                std::function<void()> release_transformer) {
  require_file(folder, "model_index.json", "FLUX.1-dev");
  rt.validate();
  for (const char* t : {"tokenizer", "tokenizer_2"}) text::check_tokenizer_folder(sub_folder(folder, t), rt.allow_outside_paths);
  auto impl = std::make_shared<Impl>();
  impl->rt = rt;
  impl->group = group;
  impl->folder = folder;
  impl->scheduler = load_scheduler(sub_folder(folder, "scheduler"));
  impl->tokenizer = text::ClipTokenizer::from_vocab_merges(sub_folder(folder, "tokenizer"));
  impl->tokenizer_2 =
      text::T5Tokenizer::from_spiece_model((fs::path(sub_folder(folder, "tokenizer_2")) / "spiece.model").string());
  const std::string vae_dir = sub_folder(folder, "vae"), clip_dir = sub_folder(folder, "text_encoder"),
                    t5_dir = sub_folder(folder, "text_encoder_2");
  // Each init builds its component once (checking its weights); offload may drop it again at once.
  const int64_t latent = impl->vae.init("vae", [vae_dir, rt] { return FluxVae::load(vae_dir, rt.on("vae")); }, group)
                             .config().latent_channels;
  const ClipTextConfig clip_cfg =
      impl->clip.init("text_encoder", [clip_dir, rt] { return ClipTextModel::load(clip_dir, rt.on("text")); }, group).config();
  const int64_t t5_dim =
      impl->t5.init("text_encoder_2", [t5_dir, rt] { return T5Encoder::load(t5_dir, rt.on("text")); }, group).config().d_model;
  impl->dit_cfg =
      impl->transformer.init("transformer", std::move(transformer), group, /*streams=*/true, std::move(release_transformer))
          .config();
  impl->clip_max_positions = clip_cfg.max_position_embeddings;
  const auto& dc = impl->dit_cfg;
  if (dc.pooled_projection_dim != clip_cfg.hidden_size || dc.joint_attention_dim != t5_dim ||
      dc.in_channels != 4 * latent)
    throw Error("FLUX components do not fit together", folder,
                "pooled_projection_dim = CLIP hidden, joint_attention_dim = T5 d_model, in_channels = 4 x latent",
                std::to_string(dc.pooled_projection_dim) + "/" + std::to_string(clip_cfg.hidden_size) + ", " +
                    std::to_string(dc.joint_attention_dim) + "/" + std::to_string(t5_dim) + ", " +
                    std::to_string(dc.in_channels) + "/" + std::to_string(latent));
  FluxPipeline p;
  p.impl_ = impl;
  return p;
}

FluxTransformer FluxPipeline::transformer() const { return impl_->transformer.get(); }
FluxVae FluxPipeline::vae() const { return impl_->vae.get(); }
ClipTextModel FluxPipeline::text_encoder() const { return impl_->clip.get(); }
T5Encoder FluxPipeline::text_encoder_2() const { return impl_->t5.get(); }
const FluxDiTConfig& FluxPipeline::transformer_config() const { return impl_->dit_cfg; }
const FlowMatchConfig& FluxPipeline::scheduler() const { return impl_->scheduler; }
const RuntimeOptions& FluxPipeline::runtime() const { return impl_->rt; }

namespace {
// ids padded / truncated to `length`, as [1, length] int64
at::Tensor encode_padded(const text::Tokenizer& tok, const std::string& prompt, int64_t length) {
  text::EncodeOptions o;
  o.max_length = static_cast<size_t>(length);
  o.pad_to_max_length = true;
  std::vector<int64_t> ids = tok.encode(prompt, o);
  return at::tensor(ids, at::kLong).reshape({1, -1});
}
}  // namespace

at::Tensor FluxPipeline::clip_ids(const std::string& prompt) const {
  // diffusers: padding="max_length", max_length=tokenizer_max_length (77), truncation=True
  return encode_padded(*impl_->tokenizer, prompt, impl_->clip_max_positions);
}

at::Tensor FluxPipeline::t5_ids(const std::string& prompt, int64_t max_sequence_length) const {
  if (max_sequence_length < 1 || max_sequence_length > 512)
    throw Error("invalid max_sequence_length", "FluxPipeline", "1..512", std::to_string(max_sequence_length));
  return encode_padded(*impl_->tokenizer_2, prompt, max_sequence_length);
}

FluxPromptEmbeds FluxPipeline::encode_ids(const at::Tensor& clip_ids, const at::Tensor& t5_ids) const {
  const auto dtype = impl_->rt.compute_dtype();
  FluxPromptEmbeds e;
  e.pooled = impl_->clip.get().forward(clip_ids).pooler_output.to(dtype);
  e.t5 = impl_->t5.get().forward(t5_ids).to(dtype);
  return e;
}

FluxPromptEmbeds FluxPipeline::encode_prompt(const std::string& prompt, const std::string& prompt_2,
                                             int64_t max_sequence_length) const {
  if (max_sequence_length < 1 || max_sequence_length > 512)
    throw Error("invalid max_sequence_length", "FluxPipeline.encode_prompt", "1..512", std::to_string(max_sequence_length));
  return encode_ids(clip_ids(prompt), t5_ids(prompt_2, max_sequence_length));
}

namespace {
void check_noise(const at::Tensor& noise, const FluxDiTConfig& c) {
  if (noise.dim() != 4 || noise.size(1) * 4 != c.in_channels || noise.size(2) % 2 != 0 || noise.size(3) % 2 != 0)
    throw Error("initial noise has the wrong shape", "FluxPipeline.denoise",
                "[B, " + std::to_string(c.in_channels / 4) + ", even h, even w]", shape_str(noise.sizes().vec()));
}
}  // namespace

std::optional<at::Tensor> FluxPipeline::denoise(const at::Tensor& noise, const FluxPromptEmbeds& cond,
                                                const FluxPromptEmbeds* uncond, const FluxOptions& opt,
                                                const ProgressCallback& progress) const {
  const Impl& m = *impl_;
  check_guidance(opt.guidance, "FluxPipeline.denoise: guidance");
  check_guidance(opt.true_cfg_scale, "FluxPipeline.denoise: true_cfg_scale");
  check_noise(noise, m.dit_cfg);
  const int64_t b = noise.size(0), h = noise.size(2), w = noise.size(3);
  for (const FluxPromptEmbeds* e : {&cond, uncond})
    if (e && (e->pooled.size(0) != b || e->t5.size(0) != b))
      throw Error("prompt embeddings and noise disagree on the batch", "FluxPipeline.denoise", std::to_string(b),
                  std::to_string(e->pooled.size(0)));
  const auto dev = m.rt.torch_device();
  FluxDiTInputs in;
  in.img_ids = latent_image_ids(h, w).to(dev);
  in.txt_ids = text_ids(cond.t5.size(1)).to(dev);
  in.guidance = at::full({b}, opt.guidance, at::kFloat).to(dev);
  in.pooled_projections = cond.pooled;
  in.encoder_hidden_states = cond.t5;
  FluxDiTInputs neg = in;
  if (uncond) {
    neg.txt_ids = text_ids(uncond->t5.size(1)).to(dev);
    neg.pooled_projections = uncond->pooled;
    neg.encoder_hidden_states = uncond->t5;
  }
  const bool cfg = uncond && opt.true_cfg_scale > 1.0;
  const FluxTransformer dit = m.transformer.get();
  auto velocity = [&](const at::Tensor& latents, const at::Tensor& ts, int64_t) {
    in.hidden_states = latents;
    in.timestep = ts;
    if (!cfg) return dit.forward(in);
    neg.hidden_states = latents;
    neg.timestep = ts;
    // With CFG parallelism the two passes run on different ranks.
    auto [v, vn] = cfg_pair(m.rt.parallel.get(), [&] { return dit.forward(in); }, [&] { return dit.forward(neg); });
    return vn + opt.true_cfg_scale * (v - vn);
  };
  return denoise_with(noise, opt.steps, velocity, progress);
}

std::optional<at::Tensor> FluxPipeline::denoise_with(const at::Tensor& noise, int64_t steps, const VelocityFn& velocity,
                                                     const ProgressCallback& progress) const {
  const Impl& m = *impl_;
  check_noise(noise, m.dit_cfg);
  if (steps < 1) throw Error("invalid number of steps", "FluxPipeline.denoise", ">= 1", std::to_string(steps));
  const int64_t b = noise.size(0);
  const auto dtype = m.rt.compute_dtype();
  const auto dev = m.rt.torch_device();
  at::Tensor latents = pack_latents(noise.to(dev, dtype));  // [B, N, 64]
  const int64_t n = latents.size(1);
  auto sched = flow_match_schedule(steps, flow_match_mu(n, m.scheduler));
  const float* sig = sched.sigmas.data_ptr<float>();

  if (progress && !progress("denoise", 0, steps)) return std::nullopt;
  for (int64_t i = 0; i < steps; ++i) {
    // diffusers: timestep = t.expand(B).to(latents.dtype) / 1000 with t = sigma * 1000 in float32
    at::Tensor ts = (sched.timesteps.slice(0, i, i + 1).expand({b}).to(dev, dtype) / 1000);
    at::Tensor v = velocity(latents, ts, i).to(latents.device());  // the DiT may be placed elsewhere
    tap("flux.noise_pred", v);
    latents = flow_match_euler_step(latents, v, sig[i], sig[i + 1]);
    tap("flux.step_latents", latents);
    if (progress && !progress("denoise", i + 1, steps)) return std::nullopt;
  }
  check_finite(latents, "FLUX denoising: latents after the last step");
  return latents;
}

at::Tensor FluxPipeline::decode(const at::Tensor& packed, int64_t height, int64_t width, VaeTilingMode tiling) const {
  flux_check_size(width, height);
  const FluxVae vae = impl_->vae.get();
  at::Tensor z = vae.unscale_latents(unpack_latents(packed, flux_latent_size(height), flux_latent_size(width)));
  tap("flux.vae_input", z);
  const int64_t tile = std::max<int64_t>(1, vae.config().sample_size / vae.config().downscale());
  const bool tiled = tiling == VaeTilingMode::On ||
                     (tiling == VaeTilingMode::Auto && (z.size(2) > tile || z.size(3) > tile));
  check_finite(z, "VAE input latents (after scaling_factor / shift_factor)");
  at::Tensor image = tiled ? vae.decode_tiled(z) : vae.decode(z);
  check_finite(image, "VAE decode: pixels");
  return image;
}

at::Tensor FluxPipeline::to_uint8(const at::Tensor& image) {
  if (image.dim() != 4 || image.size(1) != 3)
    throw Error("image must be [B, 3, H, W]", "FluxPipeline.to_uint8", "[B, 3, H, W]", shape_str(image.sizes().vec()));
  at::Tensor x = (image.to(at::kCPU, at::kFloat) / 2 + 0.5).clamp(0, 1);
  // numpy: (x * 255).round().astype(uint8) on NHWC float32; at::round is half to even
  return at::round(x.permute({0, 2, 3, 1}) * 255).to(at::kByte).contiguous();
}

std::optional<Image> FluxPipeline::generate(const FluxOptions& opt, const ProgressCallback& progress) const {
  flux_check_size(opt.width, opt.height);
  if (opt.steps < 1 || opt.steps > 1000)
    throw Error("invalid number of steps", "FluxPipeline.generate", "1..1000", std::to_string(opt.steps));
  const std::string& p2 = opt.prompt_2 ? *opt.prompt_2 : opt.prompt;
  FluxPromptEmbeds cond = encode_prompt(opt.prompt, p2, opt.max_sequence_length);
  std::optional<FluxPromptEmbeds> uncond;
  if (opt.true_cfg_scale > 1.0 && opt.negative_prompt)
    uncond = encode_prompt(*opt.negative_prompt, *opt.negative_prompt, opt.max_sequence_length);
  if (progress && !progress("encode_prompt", 1, 1)) return std::nullopt;

  const int64_t c = impl_->dit_cfg.in_channels / 4;
  at::Tensor noise = flux_initial_noise(opt.seed, 1, c, flux_latent_size(opt.height), flux_latent_size(opt.width));
  auto latents = denoise(noise, cond, uncond ? &*uncond : nullptr, opt, progress);
  if (!latents) return std::nullopt;
  at::Tensor image = decode(*latents, opt.height, opt.width, opt.vae_tiling);
  if (progress && !progress("decode", 1, 1)) return std::nullopt;
  return image_from_tensor(to_uint8(image)[0]);
}

}  // namespace omniflux
