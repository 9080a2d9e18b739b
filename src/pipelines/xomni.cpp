// X-Omni pipelines, after X-Omni-Team/X-Omni generate.py / chat.py and the HF remote code
// modeling_xomni.py (init_vision, tokenize_image, mmdecode, detokenize_image). The decoder body
// (modeling_siglip_flux.py) was not available: its feature injection is detected from the weight
// names and its two-scale guidance is the formula documented in pipelines/xomni.h.
#include "omniflux/pipelines/xomni.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include <ATen/ATen.h>

#include "checks.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "omniflux/io/image_tensor.h"
#include "io/paths.h"
#include "nn/kv_cache.h"
#include "sampling/latents.h"
#include "text/chat_template.h"
#include "omniflux/text/tokenizer.h"
#include "sampling/decode_graph.h"

namespace fs = std::filesystem;

namespace omniflux {


// ---- vision_config -------------------------------------------------------------------------------

XOmniVisionConfig XOmniVisionConfig::from(const Config& model_config) {
  if (!model_config.has("vision_config"))
    throw Error("the X-Omni config has no vision_config (init_vision reads it)", model_config.source(),
                "vision_config {dtype, transform, encoder, decoder}", "absent");
  const Config vc = model_config.sub("vision_config");
  XOmniVisionConfig v;
  v.dtype = vc.get_string("dtype", "");
  if (vc.has("transform")) v.transform = AnyresTransform::from(vc.sub("transform"));
  if (!vc.has("encoder")) throw Error("vision_config has no encoder", vc.source() + ": vision_config.encoder");
  const Config enc = vc.sub("encoder");
  v.siglip_name = enc.get_string("siglip_name", "");
  v.siglip_path = enc.get_string("siglip_path");
  v.projector_path = enc.get_string("projector_path");
  v.vq = SiglipVQConfig::from(enc);
  if (enc.has("siglip_config")) {
    v.vit = SiglipViTConfig::from(enc.sub("siglip_config"));
  } else if (v.siglip_name == "siglip2_giant_patch16_384") {
    v.vit = SiglipViTConfig{};  // SigLIP2-g: the struct's defaults (docs/models/xomni.md §2.2)
  } else {
    throw Error("unknown ViT name and no encoder.siglip_config giving its sizes",
                vc.source() + ": vision_config.encoder.siglip_name", "siglip2_giant_patch16_384",
                v.siglip_name.empty() ? "absent" : v.siglip_name);
  }
  if (v.vit.hidden_size != v.vq.z_channels)
    throw Error("the ViT width must equal the projector's z_channels", vc.source() + ": vision_config.encoder",
                std::to_string(v.vq.z_channels), std::to_string(v.vit.hidden_size));
  if (v.vit.patch_size != v.transform.patch_size)
    throw Error("the ViT patch must equal the transform's patch_size", vc.source() + ": vision_config.transform",
                std::to_string(v.vit.patch_size), std::to_string(v.transform.patch_size));
  if (!vc.has("decoder")) throw Error("vision_config has no decoder", vc.source() + ": vision_config.decoder");
  const Config dec = vc.sub("decoder");
  v.decoder.model_path = dec.get_string("model_path", v.decoder.model_path);
  // 16 (VAE x8 times the 2x2 packing) makes the code grid the packed latent grid; other factors
  // resize the features (XOmniDecoder::injection) and must give FLUX sizes (checked per call).
  v.decoder.upscale_factor = dec.get_int_in("upscale_factor", 1, 1024);
  v.decoder.num_inference_steps = dec.get_int_in("num_inference_steps", 1, 1000);
  v.decoder.cfg_scale = dec.get_double_in("cfg_scale", 0, kMaxGuidance);
  v.decoder.cfg_scale_2 = dec.get_double("cfg_scale_2", v.decoder.cfg_scale_2, 0, kMaxGuidance);
  return v;
}

// ---- sampling ----------------------------------------------------------------------------------------

namespace {

// "4.51.3" >= "4.50" on the numeric components.
bool version_at_least(const std::string& v, int major, int minor) {
  int a = 0, b = 0;
  char dot = 0;
  std::istringstream in(v);
  if (!(in >> a)) return false;
  if (in >> dot >> b) {}
  return a > major || (a == major && b >= minor);
}

}  // namespace

sampling::SamplingOptions xomni_merge_generation_config(const sampling::SamplingOptions& user, const Config* gc) {
  sampling::SamplingOptions s = user;
  if (!gc || !version_at_least(gc->get_string("transformers_version", "0"), 4, 50)) return s;
  const sampling::SamplingOptions def;  // GenerationConfig() defaults (min_p None = 0 here)
  // transformers: a field takes the model's value when the user's equals the global default and
  // the model's does not.
  if (s.temperature == def.temperature && gc->has("temperature")) s.temperature = gc->get_positive("temperature", 1.0, 1e4);
  if (s.top_k == def.top_k && gc->has("top_k")) s.top_k = gc->get_int("top_k", 0, 0, omniflux::Config::kMaxSize);
  if (s.top_p == def.top_p && gc->has("top_p")) s.top_p = gc->get_positive("top_p", 1.0, 1.0);
  if (s.min_p == def.min_p && gc->has("min_p")) s.min_p = gc->get_double("min_p", 0.0, 0.0, 1.0);
  if (s.repetition_penalty == def.repetition_penalty && gc->has("repetition_penalty"))
    s.repetition_penalty = gc->get_positive("repetition_penalty", 1.0, 1e4);
  return s;
}

void xomni_check_size(int64_t width, int64_t height) {
  for (auto [name, v] : {std::pair<const char*, int64_t>{"width", width}, {"height", height}})
    if (v < 16 || v > kFluxMaxSide || v % 16 != 0)
      throw Error("invalid image size", std::string("X-Omni: ") + name,
                  "a multiple of 16 in [16, " + std::to_string(kFluxMaxSide) + "]", std::to_string(v));
}

// ---- decoder -------------------------------------------------------------------------------------

XOmniDecoder::Injection XOmniDecoder::detect_injection(const std::vector<std::string>& extra, const WeightStore& store,
                                                       const FluxDiTConfig& cfg, int64_t z) {
  auto listing = [&] {
    std::string s;
    for (const auto& k : extra) s += (s.empty() ? "" : ", ") + k + " " + shape_str(store.info(k).shape);
    return s.empty() ? std::string("no extra keys") : s;
  };
  const std::string want = "one Linear <name>.weight [" + std::to_string(cfg.inner_dim()) + ", " + std::to_string(z) +
                           "] (+ <name>.bias) besides the FLUX keys";
  auto fail = [&]() -> Injection {
    throw Error("the X-Omni decoder's extra weights match no known feature-injection layout",
                store.checkpoint().path(), want, listing());
  };
  auto ends = [](const std::string& s, const std::string& suf) {
    return s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (extra.empty() || extra.size() > 2) return fail();
  Injection inj;
  for (const auto& k : extra)
    if (ends(k, ".weight")) inj.prefix = k.substr(0, k.size() - 7);
  if (inj.prefix.empty()) return fail();
  const auto& w = store.info(inj.prefix + ".weight").shape;
  if (w != std::vector<int64_t>{cfg.inner_dim(), z}) return fail();
  if (extra.size() == 2) {
    const std::string b = inj.prefix + ".bias";
    if (std::find(extra.begin(), extra.end(), b) == extra.end() ||
        store.info(b).shape != std::vector<int64_t>{cfg.inner_dim()})
      return fail();
    inj.bias = true;
  }
  return inj;
}

XOmniDecoder XOmniDecoder::load(const std::string& x_omni_dir, const std::string& flux_dir, const XOmniVisionConfig& vision,
                                const RuntimeOptions& rt, std::shared_ptr<ResidencyGroup> group) {
  if (!group) group = std::make_shared<ResidencyGroup>(rt.offload);
  const std::string dir = resolve_in_folder(x_omni_dir, vision.decoder.model_path,
                                            (fs::path(x_omni_dir) / "config.json").string() + ": vision_config.decoder.model_path",
                                            rt.allow_outside_paths);
  require_folder(dir, "X-Omni decoder (vision_config.decoder.model_path)");
  const Config dc = Config::load(dir);
  const FluxDiTConfig cfg = FluxDiTConfig::from_config(dc);
  check_flux_dit_parallel(cfg, rt, dir);
  const int64_t z = vision.vq.z_channels;
  if (dc.has("siglip_channels") && dc.get_size("siglip_channels") != z)
    throw Error("the decoder's siglip_channels differs from the encoder's z_channels", dc.source() + ": siglip_channels",
                std::to_string(z), std::to_string(dc.get_int("siglip_channels")));
  auto store = WeightStore::open(dir, rt.on("dit"));
  XOmniDecoder d;
  d.cfg_ = vision.decoder;
  // Building the transformer once (inside FluxPipeline::load) marks its keys; what is left over is
  // the feature injection.
  d.flux_ = FluxPipeline::load(flux_dir, [store, cfg] { return FluxTransformer(cfg, store->root()); }, rt, group,
                               [store] { store->drop_pages(""); });
  d.layout_ = detect_injection(store->unused(), *store, cfg, z);
  d.proj_w_ = store->get(d.layout_.prefix + ".weight", {cfg.inner_dim(), z});
  if (d.layout_.bias) d.proj_b_ = store->get(d.layout_.prefix + ".bias", {cfg.inner_dim()});
  store->finish();
  return d;
}

at::Tensor XOmniDecoder::injection(const at::Tensor& features, int64_t rows, int64_t cols, int64_t lh, int64_t lw) const {
  const int64_t z = proj_w_.size(1);
  if (features.dim() != 2 || features.size(0) != rows * cols || features.size(1) != z)
    throw Error("features have the wrong shape", "XOmniDecoder.injection",
                "[" + std::to_string(rows * cols) + ", " + std::to_string(z) + "]", shape_str(features.sizes().vec()));
  at::Tensor f = features.to(proj_w_.device(), proj_w_.scalar_type());
  if (rows != lh || cols != lw) {
    // [h*w, z] -> [1, z, h, w] -> bicubic to the packed latent grid -> [lh*lw, z]
    at::Tensor g = f.t().reshape({1, z, rows, cols}).to(at::kFloat);
    g = at::upsample_bicubic2d(g, {lh, lw}, /*align_corners=*/false);
    f = g.reshape({z, lh * lw}).t().to(proj_w_.scalar_type());
  }
  at::Tensor out = at::matmul(f, proj_w_.t());
  if (proj_b_.defined()) out = out + proj_b_;
  return out.unsqueeze(0);  // [1, N, inner]
}

std::optional<Image> XOmniDecoder::decode(const at::Tensor& features, int64_t rows, int64_t cols,
                                          const std::string& prompt, const XOmniDecodeOptions& opt,
                                          const ProgressCallback& progress) const {
  const int64_t steps = opt.steps.value_or(cfg_.num_inference_steps);
  const double s1 = opt.cfg_scale.value_or(cfg_.cfg_scale), s2 = opt.cfg_scale_2.value_or(cfg_.cfg_scale_2);
  if (steps < 1 || steps > 1000)
    throw Error("invalid number of decoder steps", "XOmniDecoder.decode", "1..1000", std::to_string(steps));
  check_guidance(s1, "XOmniDecoder.decode: cfg_scale");
  check_guidance(s2, "XOmniDecoder.decode: cfg_scale_2");
  const int64_t height = rows * cfg_.upscale_factor, width = cols * cfg_.upscale_factor;
  flux_check_size(width, height);
  const FluxPipeline& flux = flux_;
  const auto dev = flux.runtime().torch_device();

  // The three predictions of the formula in xomni.h and their coefficients.
  const bool need_n = s2 != s1, need_u = s2 != 1.0;  // c is always needed
  FluxPromptEmbeds cond = flux.encode_prompt(prompt, prompt, 512);
  FluxPromptEmbeds neg;
  if (need_n || need_u) neg = flux.encode_prompt("", "", 512);
  if (progress && !progress("encode_prompt", 1, 1)) return std::nullopt;

  const int64_t lh = flux_latent_size(height), lw = flux_latent_size(width);
  at::Tensor inj = injection(features, rows, cols, lh / 2, lw / 2);
  const int64_t c = flux.transformer_config().in_channels / 4;
  at::Tensor noise = flux_initial_noise(opt.seed, 1, c, lh, lw);

  // One batch: rows [c, (n), (u)].
  std::vector<at::Tensor> t5{cond.t5}, pooled{cond.pooled}, add{inj};
  if (need_n) t5.push_back(neg.t5), pooled.push_back(neg.pooled), add.push_back(inj);
  if (need_u) t5.push_back(neg.t5), pooled.push_back(neg.pooled), add.push_back(at::zeros_like(inj));
  const int64_t k = static_cast<int64_t>(t5.size());
  FluxDiTInputs in;
  in.encoder_hidden_states = at::cat(t5);
  in.pooled_projections = at::cat(pooled);
  in.image_embeds_add = at::cat(add);
  in.img_ids = latent_image_ids(lh, lw).to(dev);
  in.txt_ids = text_ids(cond.t5.size(1)).to(dev);
  in.guidance = at::full({k}, 1.0, at::kFloat).to(dev);  // generate.py: guidance_scale=1.0
  std::optional<FluxTransformer> dit;  // taken at the first step, after the text encoders ran
  auto velocity = [&](const at::Tensor& latents, const at::Tensor& ts, int64_t) {
    if (!dit) dit = flux.transformer();
    in.hidden_states = latents.expand({k, -1, -1});
    in.timestep = ts.expand({k});
    // With CFG parallelism the guidance rows split over the CFG pair of ranks.
    at::Tensor v = cfg_rows(flux.runtime().parallel.get(), k, [&](int64_t b, int64_t e) {
      if (b == 0 && e == k) return dit->forward(in);
      FluxDiTInputs part = in;
      for (at::Tensor* t : {&part.hidden_states, &part.encoder_hidden_states, &part.pooled_projections,
                            &part.image_embeds_add, &part.timestep, &part.guidance})
        *t = t->slice(0, b, e);
      return dit->forward(part);
    });
    const at::Tensor vc = v.slice(0, 0, 1);
    if (k == 1) return vc;
    const at::Tensor vn = need_n ? v.slice(0, 1, 2) : at::Tensor();
    const at::Tensor vu = need_u ? v.slice(0, k - 1, k) : at::Tensor();
    if (!need_u) return vn + s1 * (vc - vn);  // stock true CFG (s2 = 1)
    if (!need_n) return vu + s1 * (vc - vu);  // s1 = s2
    return vu + s2 * (vn - vu) + s1 * (vc - vn);
  };
  auto latents = flux.denoise_with(noise, steps, velocity, progress);
  dit.reset();
  if (!latents) return std::nullopt;
  at::Tensor image = flux.decode(*latents, height, width, opt.vae_tiling);
  if (progress && !progress("decode", 1, 1)) return std::nullopt;
  return image_from_tensor(FluxPipeline::to_uint8(image)[0]);
}

// ---- the pipeline --------------------------------------------------------------------------------

struct XOmniPipeline::Impl {
  std::shared_ptr<ResidencyGroup> group;
  Resident<XOmniLM> lm;
  XOmniLMConfig lm_cfg;
  std::shared_ptr<const text::Tokenizer> tokenizer;
  XOmniVisionConfig vision;
  Resident<SiglipVQTokenizer> image_tokenizer;
  std::optional<XOmniDecoder> decoder;
  std::optional<Config> generation_config;
  int64_t som = 0, eom = 0, image = 0, im_end = 0;
  std::optional<std::string> system_prompt;
};

namespace {

// The ViT and projector are separate files named by vision_config.encoder, inside the folder.
std::string vision_file(const std::string& dir, const std::string& name, const std::string& field, bool allow_outside) {
  const fs::path p = resolve_in_folder(dir, name, (fs::path(dir) / "config.json").string() + ": vision_config.encoder." + field,
                                       allow_outside);
  require_regular_file(p.string(), "X-Omni vision file (vision_config.encoder." + field + ")");
  // safetensors, or the PyTorch pickles the release ships (read directly).
  return p.string();
}

// The default system prompt of the chat template (tokenizer_config.json), among the known ones.
std::optional<std::string> chat_system_prompt(const std::string& dir) {
  const fs::path p = fs::path(dir) / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return std::string(text::kQwen2_5DefaultSystemPrompt);
  const Config c = Config::load(p.string());
  if (!c.has("chat_template")) return std::string(text::kQwen2_5DefaultSystemPrompt);
  const std::string t = c.get_string("chat_template");
  if (t.find(text::kQwen2_5DefaultSystemPrompt) != std::string::npos) return std::string(text::kQwen2_5DefaultSystemPrompt);
  if (t.find("You are a helpful assistant.") != std::string::npos) return std::string("You are a helpful assistant.");
  if (t.find("<|im_start|>") != std::string::npos && t.find("system") == std::string::npos) return std::nullopt;
  throw Error("unrecognised chat template (not a Qwen2.5 ChatML with a known default system prompt)",
              p.string() + ": chat_template");
}

}  // namespace

XOmniPipeline XOmniPipeline::load(const std::string& dir, const std::string& flux_dir, const RuntimeOptions& rt) {
  rt.validate();
  require_folder(dir, "X-Omni");
  const Config model_config = Config::load(dir);
  auto impl = std::make_shared<Impl>();
  impl->vision = XOmniVisionConfig::from(model_config);
  require_file(dir, "tokenizer.json", "X-Omni");
  impl->group = std::make_shared<ResidencyGroup>(rt.offload);
  text::check_tokenizer_folder(dir, rt.allow_outside_paths);
  impl->tokenizer = text::load_tokenizer(dir);
  {
    const XOmniLM lm = impl->lm.init("lm", [dir, rt] { return XOmniLM::load(dir, rt.on("lm")); }, impl->group, /*streams=*/true);
    lm.check_image_token_ids(*impl->tokenizer);  // <MM-Token-k> = vocab_size + k
    impl->lm_cfg = lm.config();
    const auto& lc = impl->lm_cfg;
    const int64_t ids = lc.text.vocab_size + lc.mm_vocab_size;  // the text and multimodal embedding rows
    if (impl->tokenizer->vocab_size() > ids)
      throw Error("the tokenizer has ids beyond the model's vocabulary", (fs::path(dir) / "tokenizer.json").string(),
                  "at most vocab_size + mm_vocab_size = " + std::to_string(ids) + " ids",
                  std::to_string(impl->tokenizer->vocab_size()));
  }
  const std::string tok_where = "X-Omni tokenizer " + dir;
  impl->som = impl->tokenizer->require_token_id("<SOM>", tok_where);
  impl->eom = impl->tokenizer->require_token_id("<EOM>", tok_where);
  impl->image = impl->tokenizer->require_token_id("<IMAGE>", tok_where);
  impl->im_end = impl->tokenizer->require_token_id("<|im_end|>", tok_where);
  impl->system_prompt = chat_system_prompt(dir);
  const fs::path gc = fs::path(dir) / "generation_config.json";
  std::error_code ec;
  if (fs::is_regular_file(gc, ec)) impl->generation_config = Config::load(gc.string());

  const XOmniVisionConfig& v = impl->vision;
  if (v.vq.codebook_size != impl->lm_cfg.image_vocab_size)
    throw Error("the VQ codebook and the LM's image vocabulary differ", dir + ": vision_config.encoder.codebook_size",
                std::to_string(impl->lm_cfg.image_vocab_size), std::to_string(v.vq.codebook_size));
  const std::string vit_file = vision_file(dir, v.siglip_path, "siglip_path", rt.allow_outside_paths);
  const std::string vq_file = vision_file(dir, v.projector_path, "projector_path", rt.allow_outside_paths);
  // The SigLIP-VQ tokenizer stays whole on every rank (only the LM's layers split under tensor
  // parallelism).
  impl->image_tokenizer.init(
      "image_tokenizer",
      [vit_file, vq_file, v, rt] {
        auto vit_store = WeightStore::open(vit_file, rt.on("vq"));
        SiglipViT vit(*vit_store, v.vit);
        vit_store->finish();
        auto vq_store = WeightStore::open(vq_file, rt.on("vq"));
        SiglipVQ vq(vq_store->root(), v.vq);
        vq_store->finish();
        return SiglipVQTokenizer(std::move(vit), std::move(vq), v.transform);
      },
      impl->group);
  if (!flux_dir.empty()) impl->decoder = XOmniDecoder::load(dir, flux_dir, v, rt, impl->group);
  XOmniPipeline p;
  p.impl_ = impl;
  return p;
}

XOmniLM XOmniPipeline::lm() const { return impl_->lm.get(); }
const text::Tokenizer& XOmniPipeline::tokenizer() const { return *impl_->tokenizer; }
const XOmniVisionConfig& XOmniPipeline::vision_config() const { return impl_->vision; }
SiglipVQTokenizer XOmniPipeline::image_tokenizer() const { return impl_->image_tokenizer.get(); }
bool XOmniPipeline::has_decoder() const { return impl_->decoder.has_value(); }
const XOmniDecoder& XOmniPipeline::decoder() const {
  if (!impl_->decoder) throw Error("no decoder loaded (give the FLUX.1-dev folder)", "XOmniPipeline");
  return *impl_->decoder;
}

namespace {
at::Tensor as_ids(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong).reshape({1, -1}); }
}  // namespace

XOmniPrompt XOmniPipeline::t2i_prompt(const std::string& prompt, int64_t width, int64_t height,
                                     const std::string& negative_prompt) const {
  xomni_check_size(width, height);
  XOmniPrompt p;
  p.rows = height / 16;  // generate.py --downsample-size 16
  p.cols = width / 16;
  const auto& tok = *impl_->tokenizer;
  std::vector<text::TextSpan> user_text;
  const std::string t2i = text::xomni_t2i_prompt(prompt, static_cast<int>(p.rows), static_cast<int>(p.cols), &user_text);
  p.ids = as_ids(text::encode_prompt(tok, t2i, user_text, special_tokens_));
  text::EncodeOptions no_special;
  no_special.add_special_tokens = false;
  const int rows = static_cast<int>(p.rows), cols = static_cast<int>(p.cols);
  if (negative_prompt.empty()) {
    p.negative_ids = as_ids(tok.encode(text::xomni_image_prefix(rows, cols), no_special));
  } else {  // encoded as the prompt row is
    std::vector<text::TextSpan> negative_text;
    const std::string negative = text::xomni_t2i_prompt(negative_prompt, rows, cols, &negative_text);
    p.negative_ids = as_ids(text::encode_prompt(tok, negative, negative_text, special_tokens_));
  }
  check_context_length(std::max(p.ids.size(1), p.negative_ids.size(1)), p.rows * p.cols,
                       impl_->lm_cfg.text.max_position_embeddings, "X-Omni generate");
  return p;
}

sampling::SamplingOptions XOmniPipeline::effective_sampling(const XOmniOptions& opt) const {
  const Config* gc = impl_->generation_config ? &*impl_->generation_config : nullptr;
  sampling::SamplingOptions s = xomni_merge_generation_config(opt.sampling, gc);
  s.seed = opt.seed;
  s.suppress_tokens = {impl_->som, impl_->eom, impl_->image};  // generate.py suppress_tokens
  return s;
}

std::optional<XOmniCodes> XOmniPipeline::generate_codes(const XOmniOptions& opt, const ProgressCallback& progress) const {
  const XOmniPrompt p = t2i_prompt(opt.prompt, opt.width, opt.height, opt.negative_prompt);
  XOmniLM::ImageGeneration g;
  g.sampling = effective_sampling(opt);
  g.guidance_scale = opt.cfg_scale;
  g.progress = progress;
  check_guidance(opt.cfg_scale, "X-Omni generate_codes: cfg_scale");
  at::Tensor codes = impl_->lm.get().generate_image_codes(p.ids, p.negative_ids, p.rows * p.cols, g).to(at::kCPU).contiguous();
  if (codes.numel() != p.rows * p.cols) return std::nullopt;  // cancelled
  XOmniCodes out;
  out.prompt = opt.prompt;
  out.rows = p.rows;
  out.cols = p.cols;
  out.codes.assign(codes.data_ptr<int64_t>(), codes.data_ptr<int64_t>() + codes.numel());
  return out;
}

std::optional<Image> XOmniPipeline::decode_codes(const XOmniCodes& c, const XOmniDecodeOptions& opt,
                                                 const ProgressCallback& progress) const {
  const XOmniDecoder& dec = decoder();
  // rows * cols checked before it is formed: huge values must not overflow.
  if (c.rows < 1 || c.cols < 1 || static_cast<int64_t>(c.codes.size()) != checked_product(c.rows, c.cols, int64_t(1) << 24, "X-Omni decode_codes: rows x cols"))
    throw Error("the number of codes must be rows * cols", "X-Omni decode_codes",
                std::to_string(c.rows) + " * " + std::to_string(c.cols), std::to_string(c.codes.size()));
  const int64_t K = impl_->vision.vq.codebook_size;
  for (int64_t k : c.codes)
    if (k < 0 || k >= K)
      throw Error("image code out of range", "X-Omni decode_codes", "0.." + std::to_string(K - 1), std::to_string(k));
  at::Tensor codes = at::tensor(c.codes, at::kLong);
  at::Tensor features = impl_->image_tokenizer.get().decode(codes, c.rows, c.cols);  // [h*w, z]
  check_finite(features, "X-Omni SigLIP-VQ decoded features");
  return dec.decode(features, c.rows, c.cols, c.prompt, opt, progress);
}

std::optional<Image> XOmniPipeline::generate(const XOmniOptions& opt, const ProgressCallback& progress) const {
  xomni_check_size(opt.width, opt.height);
  decoder();  // fail before the long AR phase when there is no decoder
  std::optional<XOmniCodes> c = generate_codes(opt, progress);
  if (!c) return std::nullopt;
  return decode_codes(*c, opt.decoder, progress);
}

std::string XOmniPipeline::image_text(const XOmniCodes& c) const {
  return text::xomni_image_text(static_cast<int>(c.rows), static_cast<int>(c.cols), c.codes);
}

XOmniMMDecoded XOmniPipeline::mmdecode(const std::vector<int64_t>& ids_in) const {
  // modeling_xomni.py mmdecode: append <EOM>, decode with special tokens, drop the pad text and
  // "<SEP>", split on "<EOM>"; each chunk is "text<SOM>H W<IMAGE><MM-Token-k>...".
  std::vector<int64_t> ids = ids_in;
  ids.push_back(impl_->eom);
  std::string doc = impl_->tokenizer->decode(ids, false);
  auto erase_all = [&](const std::string& s) {
    if (s.empty()) return;
    for (size_t p; (p = doc.find(s)) != std::string::npos;) doc.erase(p, s.size());
  };
  if (auto pad = impl_->tokenizer->pad_id()) erase_all(impl_->tokenizer->id_to_token(*pad));
  erase_all("<SEP>");
  XOmniMMDecoded out;
  const std::string EOM = "<EOM>", SOM = "<SOM>", IMG = "<IMAGE>", MM = "<MM-Token-";
  size_t start = 0;
  while (true) {
    const size_t end = doc.find(EOM, start);
    const std::string chunk = doc.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const size_t som = chunk.find(SOM);
    out.texts.push_back(chunk.substr(0, som));
    if (som != std::string::npos) {
      const std::string img = chunk.substr(som + SOM.size());
      if (img.find(SOM) != std::string::npos) throw Error("two <SOM> in one image chunk", "X-Omni mmdecode");
      const size_t im = img.find(IMG);
      if (im != std::string::npos) {
        XOmniCodes c;
        c.prompt = out.texts.back();
        std::istringstream meta(img.substr(0, im));
        if (!(meta >> c.rows >> c.cols) || c.rows < 1 || c.cols < 1)
          throw Error("bad image size in <SOM>H W<IMAGE>", "X-Omni mmdecode", "two positive integers", img.substr(0, im));
        checked_product(c.rows, c.cols, int64_t(1) << 24, "X-Omni mmdecode: <SOM>H W<IMAGE>");
        const std::string toks = img.substr(im + IMG.size());
        for (size_t p = toks.find(MM); p != std::string::npos && static_cast<int64_t>(c.codes.size()) < c.rows * c.cols;
             p = toks.find(MM, p + 1))
        {
          const size_t q = p + MM.size();
          size_t e = q;
          while (e < toks.size() && std::isdigit(static_cast<unsigned char>(toks[e]))) ++e;
          if (e == q) throw Error("an image token without a code number", "X-Omni mmdecode", "<MM-Token-k>", toks.substr(p, 16));
          c.codes.push_back(std::stoll(toks.substr(q, e - q)));
        }
        if (static_cast<int64_t>(c.codes.size()) != c.rows * c.cols)
          throw Error("an image holds fewer codes than H * W", "X-Omni mmdecode", std::to_string(c.rows * c.cols),
                      std::to_string(c.codes.size()));
        out.images.push_back(std::move(c));
      }
    }
    if (end == std::string::npos) break;
    start = end + EOM.size();
  }
  return out;
}

XOmniCodes XOmniPipeline::tokenize_image(const Image& image) const {
  SiglipVQTokenizer::Tokens t = impl_->image_tokenizer.get().encode(image);
  at::Tensor codes = t.codes.to(at::kCPU, at::kLong).contiguous();
  XOmniCodes c;
  c.rows = t.h;
  c.cols = t.w;
  c.codes.assign(codes.data_ptr<int64_t>(), codes.data_ptr<int64_t>() + codes.numel());
  return c;
}

at::Tensor XOmniPipeline::chat_prompt(const XOmniCodes& image, const std::string& question) const {
  text::XOmniChatOptions o;
  o.system_prompt = impl_->system_prompt;
  // chat.py: the image text, a newline, then the question; only the question is the user's text
  // (the image text is ours and must parse as special tokens).
  text::ChatMessage user{"user", {text::ChatContent::make_markup(image_text(image) + "\n"), text::ChatContent::make_text(question)}};
  std::vector<text::TextSpan> user_text;
  const std::string chat = text::render_xomni_chat(std::vector<text::ChatMessage>{user}, o, &user_text);
  return as_ids(text::encode_prompt(*impl_->tokenizer, chat, user_text, special_tokens_));
}

at::Tensor XOmniPipeline::chat_prompt(const std::vector<ChatTurn>& turns) const {
  check_chat_turns(turns, 1, "X-Omni chat");
  std::vector<text::ChatMessage> messages;
  for (const ChatTurn& t : turns) {
    text::ChatMessage m{t.role, {}};
    std::string question;
    for (const ChatPart& part : t.parts) {
      if (part.is_image)
        m.content.push_back(text::ChatContent::make_markup(image_text(tokenize_image(part.image)) + "\n"));
      else
        question += part.text;  // the template concatenates adjacent text parts
    }
    if (!question.empty() || m.content.empty()) m.content.push_back(text::ChatContent::make_text(question));
    messages.push_back(std::move(m));
  }
  text::XOmniChatOptions o;
  o.system_prompt = impl_->system_prompt;
  std::vector<text::TextSpan> user_text;
  const std::string chat = text::render_xomni_chat(messages, o, &user_text);
  return as_ids(text::encode_prompt(*impl_->tokenizer, chat, user_text, special_tokens_));
}

ChatAnswer XOmniPipeline::answer(const at::Tensor& ids, sampling::TextGenerationOptions g, const ChatStream& stream) const {
  // chat.py returns texts[0] of mmdecode over the answer ids: the text before any image the model
  // wrote. Without a stop string cutting it, the answer is that.
  check_context_length(ids.size(1), g.max_new_tokens, impl_->lm_cfg.text.max_position_embeddings, "X-Omni chat");
  const XOmniLM lm = impl_->lm.get();  // after the image tokenizer ran (model offload swaps them)
  g.eos_token_ids = {impl_->im_end};
  nn::KVCache cache = lm.new_cache(1, ids.size(1) + g.max_new_tokens);
  at::Tensor first = lm.prefill(ids, cache, XOmniMode::Text).squeeze(1);
  check_finite(first, "X-Omni chat prefill logits");
  auto step = [&](const at::Tensor& id) { return lm.decode_one(id, cache, XOmniMode::Text); };
  std::vector<int64_t> sampled;  // the ids of the last decode: the whole answer
  auto decode = [&](const std::vector<int64_t>& answer) {
    sampled = answer;
    return impl_->tokenizer->decode(answer, false);
  };
  sampling::TextGeneration t = sampling::generate_text(first, step, decode, g, ids.to(first.device(), at::kLong), stream,
                                                       sampling::decode_graph_cache(cache, lm.runtime()));
  ChatAnswer a;
  a.prompt_tokens = ids.size(1);
  a.completion_tokens = t.completion_tokens;
  a.finish = t.finish;
  const bool cut_by_stop = t.finish == sampling::FinishReason::Stop && !g.stop.empty() &&
                           t.text.size() < impl_->tokenizer->decode(sampled, false).size();
  a.text = cut_by_stop || t.finish == sampling::FinishReason::Cancelled ? std::move(t.text) : mmdecode(sampled).texts.front();
  return a;
}

std::optional<ChatAnswer> XOmniPipeline::chat(const std::vector<ChatTurn>& turns, const ChatOptions& options,
                                              const ChatStream& stream, const ProgressCallback& progress) const {
  const at::Tensor ids = chat_prompt(turns);
  // chat.py: generate(do_sample=False, max_new_tokens=512, eos <|im_end|>) on top of the model's
  // generation_config.json (kwargs override it): greedy, with the file's repetition penalty.
  const double rp = impl_->generation_config ? impl_->generation_config->get_positive("repetition_penalty", 1.0, 1e4) : 1.0;
  ChatAnswer a = answer(ids, chat_generation_options(options, kXOmniAnswerTokens, rp, progress), stream);
  if (a.finish == sampling::FinishReason::Cancelled) return std::nullopt;
  return a;
}

std::optional<std::string> XOmniPipeline::chat(const Image& image, const std::string& question,
                                               const ChatStream& stream, int64_t max_new_tokens,
                                               const ProgressCallback& progress) const {
  if (max_new_tokens < 1) throw Error("max_new_tokens must be >= 1", "X-Omni chat", ">= 1", std::to_string(max_new_tokens));
  const at::Tensor ids = chat_prompt(tokenize_image(image), question);
  ChatOptions options;
  options.max_new_tokens = max_new_tokens;
  const double rp = impl_->generation_config ? impl_->generation_config->get_positive("repetition_penalty", 1.0, 1e4) : 1.0;
  ChatAnswer a = answer(ids, chat_generation_options(options, kXOmniAnswerTokens, rp, progress), stream);
  if (a.finish == sampling::FinishReason::Cancelled) return std::nullopt;
  return a.text;
}

}  // namespace omniflux
