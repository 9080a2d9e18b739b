// Parity case flux_pipeline: FLUX.1-dev text-to-image stage by stage (tokenize, noise,
// encode_prompt, denoise, decode), each from the fixture's own inputs, then the full call from
// prompt and seed to the uint8 image.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/pipelines/flux.h"
#include "sampling/latents.h"
#include "parity.h"
#include "taps.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(flux_pipeline) {
  const auto folder = std::filesystem::path(ctx.file("model_index")).parent_path().string();
  auto pipe = omniflux::FluxPipeline::load(folder, ctx.rt);
  ParityOutputs out;
  const int64_t height = ctx.input("height").item<int64_t>(), width = ctx.input("width").item<int64_t>();
  const int64_t max_len = ctx.input("max_sequence_length").item<int64_t>();

  // tokenize
  at::Tensor utf8 = ctx.input("prompt_utf8").contiguous();
  const std::string prompt(reinterpret_cast<const char*>(utf8.data_ptr<uint8_t>()), utf8.numel());
  out["clip_input_ids"] = pipe.clip_ids(prompt);
  out["t5_input_ids"] = pipe.t5_ids(prompt, max_len);

  // noise: the seeded CPU generator in diffusers' shape
  const int64_t h = omniflux::flux_latent_size(height), w = omniflux::flux_latent_size(width);
  at::Tensor noise = ctx.input("initial_noise");
  out["seed_noise"] = omniflux::flux_initial_noise(static_cast<uint64_t>(ctx.input("seed").item<int64_t>()), 1,
                                                   noise.size(1), h, w);

  // encode_prompt
  auto e = pipe.encode_ids(ctx.input("clip_input_ids"), ctx.input("t5_input_ids"));
  out["pooled_prompt_embeds"] = e.pooled;
  out["prompt_embeds"] = e.t5;
  auto r = pipe.text_encoder().forward(ctx.input("clip_input_ids"));
  out["inter_clip_last_hidden_state"] = r.last_hidden_state;
  out["inter_pooled_index"] = r.pooled_index;
  out["inter_text_ids"] = omniflux::text_ids(max_len);
  out["inter_latent_image_ids"] = omniflux::latent_image_ids(h, w);
  at::Tensor packed = omniflux::pack_latents(noise);
  out["inter_packed_initial_latents"] = packed;

  // denoise, from the fixture's embeddings and noise
  const int64_t steps = ctx.input("num_inference_steps").item<int64_t>();
  const double mu = omniflux::flow_match_mu(packed.size(1), pipe.scheduler());
  auto sched = omniflux::flow_match_schedule(steps, mu);
  out["timesteps"] = sched.timesteps;
  out["inter_sigmas"] = sched.sigmas;
  out["inter_mu"] = at::tensor({static_cast<float>(mu)});
  omniflux::FluxPromptEmbeds cond{ctx.input("pooled_prompt_embeds"), ctx.input("prompt_embeds")};
  omniflux::FluxOptions opt;
  opt.steps = steps;
  opt.guidance = ctx.input("guidance_scale").item<float>();
  {
    omniflux::parity::Taps taps;
    auto latents = pipe.denoise(noise, cond, nullptr, opt);
    out["final_latents"] = *latents;
    out["latents_step1"] = taps.seen.at("flux.step_latents").front();
    taps.put_stacked(out, "inter_noise_pred", "flux.noise_pred");
    taps.put_stacked(out, "inter_step_latents", "flux.step_latents");
  }

  // decode, from the fixture's final latents
  {
    omniflux::parity::Taps taps;
    at::Tensor image = pipe.decode(ctx.input("final_latents"), height, width);
    out["image"] = image;
    taps.put_last(out, "inter_vae_input", "flux.vae_input");
  }

  // full: prompt and seed to the uint8 image in one call
  omniflux::FluxOptions g;
  g.prompt = prompt;
  g.width = width;
  g.height = height;
  g.steps = steps;
  g.guidance = opt.guidance;
  g.max_sequence_length = max_len;
  g.seed = static_cast<uint64_t>(ctx.input("seed").item<int64_t>());
  auto img = pipe.generate(g);
  out["image_uint8"] = at::tensor(img->rgb, at::kByte).reshape({img->height, img->width, 3});
  return out;
}
