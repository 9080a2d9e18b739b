// UniWorld-V1 inference after the official app.py chat_step / univa/serve/cli.py
// (docs/models/uniworld.md §3): one VLM prefill, SigLIP per reference image, the connectors, CLIP + T5 from
// FLUX.1-dev, the FLUX loop with UniWorld's own DiT, VAE decode; or a text answer.
#include "omniflux/pipelines/uniworld.h"

#include <cmath>
#include <filesystem>
#include <optional>

#include <ATen/ATen.h>

#include "checks.h"
#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/io/image_tensor.h"
#include "io/paths.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/siglip2.h"
#include "nn/debug.h"
#include "nn/kv_cache.h"
#include "sampling/latents.h"
#include "text/chat_template.h"
#include "sampling/decode_graph.h"

namespace fs = std::filesystem;

namespace omniflux {

struct UniWorldPipeline::Impl {
  RuntimeOptions rt;
  std::shared_ptr<ResidencyGroup> group;
  Resident<Qwen2_5_VL> vlm;
  Qwen2_5_VLConfig vlm_cfg;
  Qwen2_5_VLPreprocessorConfig vlm_pre;
  std::shared_ptr<const text::Tokenizer> tokenizer;
  UniWorldConnectors connectors;
  std::optional<UniWorldTaskHead> task_head;
  std::optional<FluxPipeline> flux;
  Resident<SiglipVisionModel> siglip;
  SiglipImageProcessorConfig siglip_pre;
  int64_t image_end_token_id = 151653;
  int64_t assistant_token_id = 77091;  // app.py / cli.py hard-code it
};

UniWorldTask parse_uniworld_task(const std::string& name) {
  if (name == "auto") return UniWorldTask::Auto;
  if (name == "image") return UniWorldTask::Image;
  if (name == "text") return UniWorldTask::Text;
  throw Error("unknown task", "--task", "auto, image or text", name);
}

std::pair<int64_t, int64_t> uniworld_dynamic_resize(int64_t height, int64_t width, int64_t anchor_pixels) {
  if (height <= 0 || width <= 0 || anchor_pixels <= 0)
    throw Error("dynamic_resize needs positive sizes", "uniworld_dynamic_resize", "> 0",
                std::to_string(height) + "x" + std::to_string(width) + ", anchor " + std::to_string(anchor_pixels));
  // anyres_util.py any_11ratio, as (w, h) ratios
  static const int64_t ratios[][2] = {{16, 9}, {9, 16}, {7, 5}, {5, 7}, {5, 4}, {4, 5},
                                      {4, 3},  {3, 4},  {3, 2}, {2, 3}, {1, 1}};
  const double target = static_cast<double>(width) / static_cast<double>(height);
  const int64_t* best = ratios[0];
  double best_d = std::abs(static_cast<double>(ratios[0][0]) / ratios[0][1] - target);
  for (const auto& r : ratios) {
    const double d = std::abs(static_cast<double>(r[0]) / r[1] - target);
    if (d < best_d) best_d = d, best = r;  // strict: ties keep the first
  }
  const int64_t rw = best[0], rh = best[1], stride = 32;
  // Python round(): half to even
  const double s = std::sqrt(static_cast<double>(anchor_pixels) / static_cast<double>(stride * rh * stride * rw));
  const int64_t scale = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(s)));
  return {stride * rh * scale, stride * rw * scale};
}

namespace {

// The VLM's text answer to a built prompt (app.py: model.generate, then batch_decode with special
// tokens skipped). Finish Cancelled when `stream` cancelled.
ChatAnswer vlm_answer(const UniWorldPipeline::Impl& m, const UniWorldPipeline::VlmPrompt& p, const ChatOptions& o,
                      const ChatStream& stream, const ProgressCallback& progress) {
  sampling::TextGenerationOptions g = chat_generation_options(o, kUniWorldAnswerTokens, 1.0, progress);
  g.eos_token_ids = {m.vlm_cfg.eos_token_id};
  if (auto eot = m.tokenizer->token_to_id("<|endoftext|>")) g.eos_token_ids.push_back(*eot);
  check_context_length(p.ids.size(1), g.max_new_tokens, m.vlm_cfg.text.max_position_embeddings,
                       "UniWorld text answer (prompt + max_new_tokens)");
  const Qwen2_5_VL vlm = m.vlm.get();
  nn::KVCache cache = vlm.new_cache(1, p.ids.size(1) + g.max_new_tokens);
  at::Tensor first = vlm.prefill(p.ids, p.pixels.pixel_values, p.pixels.grid_thw, cache).squeeze(1);
  check_finite(first, "UniWorld VLM prefill logits");
  const int64_t known = m.tokenizer->vocab_size();
  auto decode = [&](const std::vector<int64_t>& ids) {
    // The embedding table is padded past the tokenizer (152064 vs 151665 ids); HF's fast
    // tokenizer decodes such ids to nothing.
    std::vector<int64_t> kept;
    for (int64_t id : ids)
      if (id < known) kept.push_back(id);
    return m.tokenizer->decode(kept, /*skip_special_tokens=*/true);
  };
  auto step = [&](const at::Tensor& id) { return vlm.decode_one(id, cache); };
  sampling::TextGeneration t = sampling::generate_text(first, step, decode, g, p.ids.to(first.device(), at::kLong), stream,
                                                       sampling::decode_graph_cache(cache, vlm.runtime()));
  ChatAnswer a;
  a.text = std::move(t.text);
  a.prompt_tokens = p.ids.size(1);
  a.completion_tokens = t.completion_tokens;
  a.finish = t.finish;
  return a;
}

}  // namespace

UniWorldPipeline UniWorldPipeline::load(const std::string& model_folder, const std::string& flux_folder,
                                        const std::string& siglip_folder, const RuntimeOptions& rt) {
  rt.validate();
  require_folder(model_folder, "UniWorld-V1");
  require_folder(flux_folder, "FLUX.1-dev");
  require_folder(siglip_folder, "SigLIP2");
  auto impl = std::make_shared<Impl>();
  impl->rt = rt;
  const Config cfg = Config::load(model_folder);
  // modeling_univa_qwen2p5vl.py needs image_end_token_id to splice the SigLIP features.
  impl->image_end_token_id = cfg.get_int_in("image_end_token_id", 0, Config::kMaxSize - 1);
  if (!cfg.has("denoise_tower")) throw Error("not a UniWorld-V1 config", cfg.source() + ": denoise_tower", "present", "absent");
  const Config dt = cfg.sub("denoise_tower");
  if (dt.get_string("denoiser_type", "flux") != "flux")
    throw Error("unsupported denoiser", cfg.source() + ": denoise_tower.denoiser_type", "flux", dt.get_string("denoiser_type"));
  if (cfg.get_bool("shortcut_image_embeds", false))
    throw Error("shortcut_image_embeds is not supported (off in the release)", cfg.source() + ": shortcut_image_embeds",
                "false", "true");

  // The checkpoint holds the VLM, the connectors, the task head's neighbours and the DiT: it opens
  // where the VLM is placed, and the DiT is built under a target of its own placement.
  const RuntimeOptions vlm_rt = rt.on("vlm");
  const c10::Device dit_device = rt.on("dit").torch_device();
  auto store = WeightStore::open(model_folder, vlm_rt);
  impl->group = std::make_shared<ResidencyGroup>(rt.offload);
  // The VLM and the DiT share the UniWorld checkpoint: a released one gives its pages back.
  {
    const Qwen2_5_VL vlm = impl->vlm.init(
        "vlm", [model_folder, store, vlm_rt] { return Qwen2_5_VL::load(model_folder, *store, vlm_rt); },
        impl->group, /*streams=*/true, [store] {
          for (const char* prefix : {"model.", "visual.", "lm_head."}) store->drop_pages(prefix);
        });
    impl->vlm_cfg = vlm.config();
    impl->vlm_pre = vlm.preprocessor();
    impl->tokenizer = vlm.shared_tokenizer();
  }
  const int64_t hidden = impl->vlm_cfg.text.hidden_size;
  cfg.check(impl->image_end_token_id < impl->vlm_cfg.text.vocab_size, "image_end_token_id",
            "an id below vocab_size " + std::to_string(impl->vlm_cfg.text.vocab_size),
            std::to_string(impl->image_end_token_id));
  const WeightView tower = store->root().sub("denoise_tower");
  impl->connectors = UniWorldConnectors::load(tower, dt.get_size("input_hidden_size", hidden),
                                                dt.get_size("output_hidden_size", 4096));
  if (impl->connectors.denoise_projector.in_dim() != hidden)
    throw Error("denoise_projector input differs from the VLM hidden size", cfg.source(), std::to_string(hidden),
                std::to_string(impl->connectors.denoise_projector.in_dim()));
  const FluxDiTConfig dit_cfg = FluxDiTConfig::from_config(dt.sub("denoiser_config"));
  check_flux_dit_parallel(dit_cfg, rt, cfg.source() + ": denoiser_config");
  store->ignore_prefix("denoise_tower.vae_projector.");  // only on the unused ref_features_for_vlm path
  impl->flux = FluxPipeline::load(
      flux_folder,
      [store, dit_cfg, dit_device] {
        std::optional<WeightStore::Target> placed;
        if (dit_device != store->runtime().torch_device()) placed.emplace(*store, dit_device, /*pinned=*/false);
        FluxTransformer dit(dit_cfg, store->root().sub("denoise_tower").sub("denoiser"));
        return dit;
      },
      rt, impl->group, [store] { store->drop_pages("denoise_tower.denoiser."); });
  store->finish();
  // SigLIP stays whole on every rank (only the LM's layers split under tensor parallelism).
  const SiglipVisionConfig sig_cfg =
      impl->siglip.init("siglip", [siglip_folder, rt] { return SiglipVisionModel::load(siglip_folder, rt.on("siglip")); }, impl->group)
          .config();
  const int64_t sig_hidden = sig_cfg.hidden_size;
  impl->siglip_pre = SiglipImageProcessorConfig::load(siglip_folder);
  // SiglipVisionModel takes exactly image_size x image_size pixels: say so at load, not after the VLM.
  const int64_t side = sig_cfg.image_size;
  if (impl->siglip_pre.height != side || impl->siglip_pre.width != side)
    throw Error("the SigLIP processor size differs from the model's image_size",
                (fs::path(siglip_folder) / "preprocessor_config.json").string() + ": size",
                std::to_string(side) + "x" + std::to_string(side),
                std::to_string(impl->siglip_pre.height) + "x" + std::to_string(impl->siglip_pre.width));
  const int64_t out = impl->connectors.denoise_projector.out_dim();
  if (impl->connectors.siglip_projector.in_dim() != sig_hidden || impl->connectors.siglip_projector.out_dim() != out ||
      impl->flux->transformer_config().joint_attention_dim != out)
    throw Error("UniWorld components do not fit together", model_folder,
                "siglip_projector in = SigLIP hidden, projector out = DiT joint_attention_dim",
                std::to_string(impl->connectors.siglip_projector.in_dim()) + "/" + std::to_string(sig_hidden) + ", " +
                    std::to_string(out) + "/" + std::to_string(impl->flux->transformer_config().joint_attention_dim));
  if (!impl->tokenizer) throw Error("UniWorld-V1 folder lacks the Qwen2.5-VL tokenizer", model_folder, "tokenizer.json", "missing");
  if (auto a = impl->tokenizer->token_to_id("assistant")) impl->assistant_token_id = *a;
  for (const char* name : {"task_head_final.pt", "task_head_final.safetensors"}) {
    const fs::path p = fs::path(model_folder) / name;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) {
      impl->task_head = UniWorldTaskHead::load(p.string(), hidden, vlm_rt);
      break;
    }
  }
  UniWorldPipeline u;
  u.impl_ = impl;
  return u;
}

Qwen2_5_VL UniWorldPipeline::vlm() const { return impl_->vlm.get(); }
const FluxPipeline& UniWorldPipeline::flux() const { return *impl_->flux; }
const UniWorldConnectors& UniWorldPipeline::connectors() const { return impl_->connectors; }
void UniWorldPipeline::set_qwen_pixels(int64_t pixels) {
  if (pixels < 28 * 28) throw Error("qwen pixels too small", "UniWorldPipeline::set_qwen_pixels", ">= 784", std::to_string(pixels));
  qwen_pixels_ = pixels;
}
bool UniWorldPipeline::has_task_head() const { return impl_->task_head.has_value(); }

std::string UniWorldPipeline::chat_text(const std::string& prompt, int num_images) const {
  return text::render_uniworld(prompt, num_images);
}

UniWorldPipeline::VlmPrompt UniWorldPipeline::build_prompt(const std::string& prompt,
                                                           const std::vector<Image>& images) const {
  if (images.size() > static_cast<size_t>(kUniWorldMaxImages))
    throw Error("too many reference images", "UniWorldPipeline", "0 to " + std::to_string(kUniWorldMaxImages),
                std::to_string(images.size()));
  // app.py: the prompt text first, then one placeholder per reference image.
  ChatTurn user{"user", {ChatPart::make_text(prompt)}};
  for (const Image& im : images) user.parts.push_back(ChatPart::make_image(im));
  return build_chat_prompt({user});
}

UniWorldPipeline::VlmPrompt UniWorldPipeline::build_chat_prompt(const std::vector<ChatTurn>& turns) const {
  const Impl& m = *impl_;
  std::vector<text::ChatMessage> messages;
  std::vector<Image> images;
  for (const ChatTurn& t : turns) {
    text::ChatMessage msg{t.role, {}};
    for (const ChatPart& part : t.parts) {
      if (part.is_image) {
        msg.content.push_back(text::ChatContent::image());
        images.push_back(part.image);
      } else if (!msg.content.empty() && msg.content.back().type == text::ChatContent::Type::Text) {
        msg.content.back().text += part.text;  // the template concatenates adjacent text parts
      } else {
        msg.content.push_back(text::ChatContent::make_text(part.text));
      }
    }
    messages.push_back(std::move(msg));
  }
  if (images.size() > static_cast<size_t>(kUniWorldMaxImages))
    throw Error("too many reference images", "UniWorldPipeline", "0 to " + std::to_string(kUniWorldMaxImages),
                std::to_string(images.size()));
  VlmPrompt p;
  std::vector<text::TextSpan> user_text;
  const std::string chat = text::render_uniworld(messages, &user_text);
  std::vector<int64_t> ids = text::encode_prompt(*m.tokenizer, chat, user_text, special_tokens_);
  std::vector<int64_t> counts;
  if (!images.empty()) {
    const auto& vc = m.vlm_cfg.vision;
    const int64_t factor = vc.patch_size * vc.spatial_merge_size;
    // Stage A, qwen_vl_utils.fetch_image: smart_resize with the message's min/max pixels, PIL
    // resize with the default filter (BICUBIC).
    std::vector<Image> fetched;
    for (const Image& img : images) {
      auto [h, w] = qwen2_5_vl_smart_resize(img.height, img.width, factor, qwen_pixels_, qwen_pixels_);
      fetched.push_back(resize(img, static_cast<int>(w), static_cast<int>(h), Resample::Bicubic));
      p.resized.push_back(image_to_tensor(fetched.back()));
    }
    // Stage B, Qwen2VLImageProcessor built with the same min/max pixels (AutoProcessor kwargs);
    // docs/models/uniworld.md §3.2 and §7 question 1: a no-op for sizes stage A already produced within the limits.
    Qwen2_5_VLPreprocessorConfig pre = m.vlm_pre;
    pre.min_pixels = pre.max_pixels = qwen_pixels_;
    p.pixels = qwen2_5_vl_preprocess(fetched, pre);
    const int64_t unit = vc.spatial_merge_size * vc.spatial_merge_size;
    for (int64_t i = 0; i < p.pixels.grid_thw.size(0); ++i) counts.push_back(p.pixels.grid_thw[i].prod().item<int64_t>() / unit);
  }
  // Also without images: a parsed <|image_pad|> in the prompt is an Error here (one placeholder per image).
  ids = text::expand_image_pads(ids, m.vlm_cfg.image_token_id, counts);
  p.ids = at::tensor(ids, at::kLong).unsqueeze(0);
  return p;
}

at::Tensor UniWorldPipeline::vlm_hidden(const VlmPrompt& p) const {
  check_context_length(p.ids.size(1), 0, impl_->vlm_cfg.text.max_position_embeddings, "UniWorld prompt");
  const Qwen2_5_VL vlm = impl_->vlm.get();
  nn::KVCache cache = vlm.new_cache(1, p.ids.size(1));
  at::Tensor h = vlm.prefill_hidden(p.ids, p.pixels.pixel_values, p.pixels.grid_thw, cache);
  check_finite(h, "UniWorld VLM hidden states");
  return h;
}

at::Tensor UniWorldPipeline::siglip_pixels(const std::vector<Image>& images) const {
  return siglip_preprocess(images, impl_->siglip_pre);
}

at::Tensor UniWorldPipeline::siglip_features(const at::Tensor& pixels) const {
  at::Tensor f = impl_->siglip.get().forward(pixels.to(impl_->rt.on("siglip").torch_device())).last_hidden_state;
  check_finite(f, "UniWorld SigLIP features");
  return f;
}

at::Tensor UniWorldPipeline::clip_ids(const std::string& text) const { return impl_->flux->clip_ids(text); }
at::Tensor UniWorldPipeline::t5_ids(const std::string& text, int64_t n) const { return impl_->flux->t5_ids(text, n); }

UniWorldTextStream UniWorldPipeline::assemble(const at::Tensor& ids, const at::Tensor& hidden, const at::Tensor& sig,
                                                const at::Tensor& t5) const {
  const Impl& m = *impl_;
  // The connectors sit with the VLM; SigLIP's features and T5's tokens come to them.
  at::Tensor e = m.connectors.denoise_projector.forward(hidden);
  tap("uniworld.vlm_projected", e);
  at::Tensor s;
  if (sig.defined() && sig.size(0) > 0) {
    s = m.connectors.siglip_projector.forward(sig.to(e.device()));
    tap("uniworld.siglip_projected", s);
  }
  return uniworld_assemble_text_stream(ids, e, s, t5.defined() ? t5.to(e.device()) : t5, m.image_end_token_id);
}

bool UniWorldPipeline::route_to_image(const at::Tensor& ids, const at::Tensor& hidden) const {
  const Impl& m = *impl_;
  if (!m.task_head)
    throw Error("the UniWorld-V1 folder has no task head, so the task cannot be chosen automatically",
                "UniWorldPipeline", "task_head_final.pt (or .safetensors), or the task image/text", "missing");
  at::Tensor pos = ids[0].eq(m.assistant_token_id).nonzero();
  if (pos.numel() == 0) throw Error("the prompt has no 'assistant' token to route on", "UniWorldPipeline");
  const int64_t last = pos[-1][0].item<int64_t>();
  return m.task_head->wants_image(hidden[0][last]);
}

std::pair<int64_t, int64_t> UniWorldPipeline::output_size(const UniWorldOptions& opt) {
  flux_check_size(opt.width, opt.height);
  if (opt.images.empty() || !opt.snap_to_ratio) return {opt.height, opt.width};
  // cli.py: h, w of Image 1, or the mean over the reference images; anchor = height * width.
  double h = 0, w = 0;
  for (const Image& im : opt.images) h += im.height, w += im.width;
  h /= static_cast<double>(opt.images.size());
  w /= static_cast<double>(opt.images.size());
  auto hw = uniworld_dynamic_resize(std::max<int64_t>(1, std::llround(h)), std::max<int64_t>(1, std::llround(w)),
                                    opt.width * opt.height);
  flux_check_size(hw.second, hw.first);
  return hw;
}

std::optional<ChatAnswer> UniWorldPipeline::chat(const std::vector<ChatTurn>& turns, const ChatOptions& options,
                                                  const ChatStream& stream, const ProgressCallback& progress) const {
  check_chat_turns(turns, kUniWorldMaxImages, "UniWorldPipeline::chat");
  ChatAnswer a = vlm_answer(*impl_, build_chat_prompt(turns), options, stream, progress);
  if (a.finish == sampling::FinishReason::Cancelled) return std::nullopt;
  return a;
}

std::optional<UniWorldResult> UniWorldPipeline::run(const UniWorldOptions& opt, const ProgressCallback& progress) const {
  const Impl& m = *impl_;
  if (opt.images.size() > static_cast<size_t>(kUniWorldMaxImages))
    throw Error("too many reference images", "UniWorldPipeline", "0 to " + std::to_string(kUniWorldMaxImages),
                std::to_string(opt.images.size()));
  if (opt.steps < 1 || opt.steps > 1000) throw Error("invalid number of steps", "UniWorldPipeline", "1..1000", std::to_string(opt.steps));
  check_guidance(opt.guidance, "UniWorldPipeline: guidance");
  if (opt.task != UniWorldTask::Image && opt.max_new_tokens < 1)
    throw Error("invalid max_new_tokens", "UniWorldPipeline", ">= 1", std::to_string(opt.max_new_tokens));
  if (opt.max_sequence_length < 1 || opt.max_sequence_length > 512)
    throw Error("invalid max_sequence_length", "UniWorldPipeline", "1..512", std::to_string(opt.max_sequence_length));
  const auto [height, width] = output_size(opt);

  VlmPrompt p = build_prompt(opt.prompt, opt.images);
  // The prompt must fit the VLM; a text answer (possible unless the task is Image) also needs
  // room for max_new_tokens.
  const bool may_answer = opt.task != UniWorldTask::Image;
  check_context_length(p.ids.size(1), may_answer ? opt.max_new_tokens : 0, m.vlm_cfg.text.max_position_embeddings,
                       may_answer ? "UniWorld text answer (prompt + max_new_tokens)" : "UniWorld prompt");
  at::Tensor hidden = vlm_hidden(p);
  if (progress && !progress("vlm", 1, 1)) return std::nullopt;

  bool image = opt.task != UniWorldTask::Text;
  if (opt.task == UniWorldTask::Auto) image = route_to_image(p.ids, hidden);
  if (!image) {
    // app.py: model.generate(**inputs, max_new_tokens=128), greedy, special tokens skipped.
    ChatOptions greedy;
    greedy.max_new_tokens = opt.max_new_tokens;
    ChatAnswer a = vlm_answer(m, p, greedy, {}, progress);
    if (a.finish == sampling::FinishReason::Cancelled) return std::nullopt;
    return UniWorldResult(std::move(a.text));
  }

  at::Tensor sig;
  if (!opt.images.empty()) {
    sig = siglip_features(siglip_pixels(opt.images));
    if (progress && !progress("siglip", 1, 1)) return std::nullopt;
  }
  // app.py: encode_prompt(text if joint_with_t5 else ""): CLIP always, T5 kept only when on.
  const std::string text = opt.use_t5 ? opt.prompt : std::string();
  FluxPromptEmbeds enc = m.flux->encode_ids(clip_ids(text), t5_ids(text, opt.max_sequence_length));
  if (progress && !progress("text_encoders", 1, 1)) return std::nullopt;
  UniWorldTextStream ts = assemble(p.ids, hidden, sig, opt.use_t5 ? enc.t5 : at::Tensor());
  const auto dtype = m.rt.compute_dtype();
  FluxPromptEmbeds cond{enc.pooled, ts.prompt_embeds.to(dtype)};

  const int64_t c = m.flux->transformer_config().in_channels / 4;
  at::Tensor noise = flux_initial_noise(opt.seed, 1, c, flux_latent_size(height), flux_latent_size(width));
  FluxOptions d;
  d.steps = opt.steps;
  d.guidance = opt.guidance;
  auto latents = m.flux->denoise(noise, cond, nullptr, d, progress);
  if (!latents) return std::nullopt;
  at::Tensor img = m.flux->decode(*latents, height, width);
  if (progress && !progress("decode", 1, 1)) return std::nullopt;
  return UniWorldResult(image_from_tensor(FluxPipeline::to_uint8(img)[0]));
}

}  // namespace omniflux
