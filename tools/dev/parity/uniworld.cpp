// Parity cases uniworld_conditioning (projectors + FLUX text-stream assembly) and
// uniworld_pipeline (UniWorld-V1 editing, stage by stage and from prompt + seed).
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/io/image_tensor.h"
#include "omniflux/models/uniworld_connectors.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/sampling/flow_match.h"
#include "sampling/latents.h"
#include "parity.h"
#include "taps.h"

using omniflux::parity::ParityOutputs;

OMNIFLUX_PARITY_CASE(uniworld_conditioning) {
  const auto cfg = omniflux::Config::load(ctx.file("config"));
  const auto dt = cfg.sub("denoise_tower");
  auto store = omniflux::WeightStore::open(ctx.file("weights"), ctx.rt);
  auto conn = omniflux::UniWorldConnectors::load(store->root().sub("denoise_tower"), dt.get_int("input_hidden_size"),
                                                   dt.get_int("output_hidden_size"), dt.get_int("siglip_hidden_size", -1));
  store->finish();
  ParityOutputs out;
  at::Tensor e = conn.denoise_projector.forward(ctx.input("vlm_hidden"));
  at::Tensor s = conn.siglip_projector.forward(ctx.input("siglip_features"));
  auto ts = omniflux::uniworld_assemble_text_stream(ctx.input("input_ids"), e, s, ctx.input("t5_embeds"),
                                                     cfg.get_int("image_end_token_id"));
  out["prompt_embeds"] = ts.prompt_embeds;
  out["txt_ids"] = ts.txt_ids;
  out["inter_vision_end_positions"] = ts.vision_end_positions;
  out["inter_row_source"] = ts.row_source;
  out["inter_vlm_projected"] = e;
  out["inter_siglip_projected"] = s;
  return out;
}

OMNIFLUX_PARITY_CASE(uniworld_pipeline) {
  namespace fs = std::filesystem;
  const auto model = fs::path(ctx.file("uniworld_config")).parent_path().string();
  const auto flux = fs::path(ctx.file("flux_model_index")).parent_path().string();
  const auto siglip = fs::path(ctx.file("siglip_config")).parent_path().string();
  auto pipe = omniflux::UniWorldPipeline::load(model, flux, siglip, ctx.rt);
  // app.py sets min_pixels = max_pixels; the pipeline has the one value.
  const int64_t qmin = ctx.input("qwen_min_pixels").item<int64_t>(), qmax = ctx.input("qwen_max_pixels").item<int64_t>();
  if (qmin != qmax)
    throw omniflux::Error("the UniWorld pipeline uses one Qwen pixel count (app.py: min_pixels = max_pixels)",
                          ctx.case_name + ": qwen_min_pixels", std::to_string(qmax), std::to_string(qmin));
  pipe.set_qwen_pixels(qmax);
  ParityOutputs out;
  at::Tensor utf8 = ctx.input("prompt_utf8").contiguous();
  const std::string prompt(reinterpret_cast<const char*>(utf8.data_ptr<uint8_t>()), utf8.numel());
  const int64_t height = ctx.input("height").item<int64_t>(), width = ctx.input("width").item<int64_t>();
  const int64_t steps = ctx.input("num_inference_steps").item<int64_t>();
  const int64_t max_len = ctx.input("max_sequence_length").item<int64_t>();
  const bool use_t5 = ctx.input("use_t5").item<int64_t>() != 0;
  const float guidance = ctx.input("guidance_scale").item<float>();
  std::vector<omniflux::Image> refs;  // ref_image_0, 1, ...: any count the case declares
  for (const at::Tensor& r : ctx.numbered_inputs("ref_image_")) refs.push_back(omniflux::image_from_tensor(r));

  // chat template, tokenizer, Qwen image processor
  const std::string chat = pipe.chat_text(prompt, static_cast<int>(refs.size()));
  out["inter_chat_text_utf8"] = at::tensor(std::vector<uint8_t>(chat.begin(), chat.end()), at::kByte);
  auto vp = pipe.build_prompt(prompt, refs);
  out["qwen_input_ids"] = vp.ids;
  for (size_t k = 0; k < vp.resized.size(); ++k) out["qwen_resized_image_" + std::to_string(k)] = vp.resized[k];
  out["qwen_pixel_values"] = vp.pixels.pixel_values;
  out["qwen_image_grid_thw"] = vp.pixels.grid_thw;

  // VLM, from the fixture's ids and pixels
  {
    omniflux::parity::Taps taps;
    omniflux::UniWorldPipeline::VlmPrompt fp;
    fp.ids = ctx.input("qwen_input_ids");
    fp.pixels = {ctx.input("qwen_pixel_values"), ctx.input("qwen_image_grid_thw")};
    out["vlm_last_hidden"] = pipe.vlm_hidden(fp);
    taps.put_last(out, "inter_position_ids", "qwen2_5_vl.position_ids");
  }

  // SigLIP
  at::Tensor sp = pipe.siglip_pixels(refs);
  out["siglip_pixel_values"] = sp;
  out["siglip_features"] = pipe.siglip_features(ctx.input("siglip_pixel_values"));

  // text encoders
  const std::string text = use_t5 ? prompt : std::string();
  out["clip_input_ids"] = pipe.clip_ids(text);
  out["t5_input_ids"] = pipe.t5_ids(text, max_len);
  auto enc = pipe.flux().encode_ids(ctx.input("clip_input_ids"), ctx.input("t5_input_ids"));
  out["pooled_prompt_embeds"] = enc.pooled;
  out["inter_pooled_index"] = pipe.flux().text_encoder().forward(ctx.input("clip_input_ids")).pooled_index;
  out["inter_t5_last_hidden"] = enc.t5;

  // assemble, from the fixture's VLM and SigLIP outputs
  {
    omniflux::parity::Taps taps;
    auto ts = pipe.assemble(ctx.input("qwen_input_ids"), ctx.input("vlm_last_hidden"), ctx.input("siglip_features"),
                            use_t5 ? enc.t5 : at::Tensor());
    out["prompt_embeds"] = ts.prompt_embeds;
    out["inter_row_source"] = ts.row_source;
    out["inter_vision_end_positions"] = ts.vision_end_positions;
    out["inter_text_ids"] = ts.txt_ids;
    taps.put_last(out, "inter_vlm_projected", "uniworld.vlm_projected");
    taps.put_last(out, "inter_siglip_projected", "uniworld.siglip_projected");
  }

  // noise and denoise, from the fixture's embeddings and noise
  const int64_t h = omniflux::flux_latent_size(height), w = omniflux::flux_latent_size(width);
  at::Tensor noise = ctx.input("seed_noise");
  out["seed_noise"] = omniflux::flux_initial_noise(static_cast<uint64_t>(ctx.input("seed").item<int64_t>()), 1,
                                                   noise.size(1), h, w);
  at::Tensor packed = omniflux::pack_latents(noise);
  out["inter_packed_initial_latents"] = packed;
  out["inter_latent_image_ids"] = omniflux::latent_image_ids(h, w);
  const double mu = omniflux::flow_match_mu(packed.size(1), pipe.flux().scheduler());
  auto sched = omniflux::flow_match_schedule(steps, mu);
  out["timesteps"] = sched.timesteps;
  out["inter_sigmas"] = sched.sigmas;
  out["inter_mu"] = at::tensor({static_cast<float>(mu)});
  {
    omniflux::parity::Taps taps;
    omniflux::FluxPromptEmbeds cond{ctx.input("pooled_prompt_embeds"), ctx.input("prompt_embeds")};
    omniflux::FluxOptions d;
    d.steps = steps;
    d.guidance = guidance;
    out["final_latents"] = *pipe.flux().denoise(noise, cond, nullptr, d);
    taps.put_stacked(out, "inter_noise_pred", "flux.noise_pred");
    taps.put_stacked(out, "inter_step_latents", "flux.step_latents");
  }
  {
    omniflux::parity::Taps taps;
    out["image"] = pipe.flux().decode(ctx.input("final_latents"), height, width);
    taps.put_last(out, "inter_vae_input", "flux.vae_input");
  }

  // the full request from prompt, image and seed (app.py: the size as given)
  omniflux::UniWorldOptions o;
  o.prompt = prompt;
  o.images = refs;
  o.width = width;
  o.height = height;
  o.snap_to_ratio = false;
  o.steps = steps;
  o.guidance = guidance;
  o.seed = static_cast<uint64_t>(ctx.input("seed").item<int64_t>());
  o.use_t5 = use_t5;
  o.max_sequence_length = max_len;
  o.task = omniflux::UniWorldTask::Image;
  auto r = pipe.run(o);
  out["image_uint8"] = omniflux::image_to_tensor(std::get<omniflux::Image>(*r));
  return out;
}
