// The dry runs of whole requests (omniflux/plan.h): every component loaded from its folder onto the
// runtime's device (meta), then run at the request's sizes under an ActivationProbe.
#include <filesystem>
#include <functional>
#include <optional>
#include <tuple>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/io/image.h"
#include "omniflux/models/clip_text.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/flux_vae.h"
#include "omniflux/models/qwen2_5_vl.h"
#include "omniflux/models/siglip_vq.h"
#include "omniflux/models/t5_encoder.h"
#include "omniflux/models/xomni_lm.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"
#include "omniflux/plan.h"
#include "nn/kv_cache.h"
#include "sampling/latents.h"

namespace fs = std::filesystem;

namespace omniflux::plan {

namespace {

std::string sub(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

ComponentPlan component(const std::string& name, const std::string& source, const Checkpoint& ckpt,
                        const std::vector<std::string>& prefixes = {}) {
  ComponentPlan c;
  c.name = name;
  c.source = source;
  c.weights = weight_figures(ckpt, prefixes);
  return c;
}

// The simulated ranks of the request being planned (null: one process); set by each plan_*.
thread_local const Parallel* t_parallel = nullptr;
struct ParallelScope {
  explicit ParallelScope(const RuntimeOptions& rt) { t_parallel = rt.parallel.get(); }
  ~ParallelScope() { t_parallel = nullptr; }
};

// How many ranks a language model's layers split over in this dry run (1 without tensor parallelism).
int64_t tensor_ranks(const RuntimeOptions& rt) {
  const ProcessGroup* g = rt.parallel ? rt.parallel->tensor_group() : nullptr;
  return g ? g->size() : 1;
}

// Runs one step of a component: a load (no probe) or a forward pass (probed, `label` names it).
void step(ComponentPlan& c, const std::string& label, const std::function<void()>& fn, bool probe = true) {
  if (!c.ok()) return;
  try {
    if (!probe) return fn();
    const Traffic before = t_parallel ? t_parallel->traffic() : Traffic{};
    ActivationProbe p(label);
    fn();
    const LargestTensor l = p.largest();
    if (l.bytes > c.largest_activation.bytes) c.largest_activation = l;
    c.runs.push_back(label);
    const Traffic after = t_parallel ? t_parallel->traffic() : Traffic{};
    c.traffic.push_back({after.calls - before.calls, after.bytes - before.bytes});
  } catch (const std::exception& e) {
    c.error = label + ": " + first_line(e.what());
  }
}

struct Dev {
  at::TensorOptions act;  // activations: the runtime's device and dtype
  explicit Dev(const RuntimeOptions& rt) : act(at::TensorOptions().device(rt.torch_device()).dtype(rt.compute_dtype())) {}
  at::Tensor empty(const std::vector<int64_t>& shape) const { return at::empty(shape, act); }
};

std::string dims(const std::vector<int64_t>& v) { return shape_str(v); }

// CPU token ids of a given length (content does not matter for shapes; they must be valid ids).
at::Tensor ids_cpu(int64_t batch, int64_t len, int64_t value = 1) { return at::full({batch, len}, value, at::kLong); }

// A grey image (the dry runs need sizes, not content).
Image grey(int64_t width, int64_t height) {
  Image img;
  img.width = static_cast<int>(width);
  img.height = static_cast<int>(height);
  img.rgb.assign(static_cast<size_t>(width * height * 3), 128);
  return img;
}

// CLIP-L and T5 of a FLUX.1-dev folder, as the text encoders of a request.
void plan_text_encoders(std::vector<ComponentPlan>& out, const std::string& flux_dir, int64_t batch, int64_t t5_tokens,
                        const RuntimeOptions& rt) {
  {
    const std::string dir = sub(flux_dir, "text_encoder");
    ComponentPlan c = component("clip_text", dir, Checkpoint::open(dir));
    std::optional<ClipTextModel> m;
    step(c, "load", [&] { m = ClipTextModel::load(dir, rt); }, false);
    step(c, "forward ids " + dims({batch, 77}), [&] { (void)m->forward(ids_cpu(batch, 77)); });
    out.push_back(std::move(c));
  }
  if (t5_tokens > 0) {
    const std::string dir = sub(flux_dir, "text_encoder_2");
    ComponentPlan c = component("t5_encoder", dir, Checkpoint::open(dir));
    std::optional<T5Encoder> m;
    step(c, "load", [&] { m = T5Encoder::load(dir, rt); }, false);
    step(c, "forward ids " + dims({batch, t5_tokens}), [&] { (void)m->forward(ids_cpu(batch, t5_tokens)); });
    out.push_back(std::move(c));
  }
}

// One DiT forward: `batch` rows of the packed latents of width x height, `txt` text tokens.
void dit_forward(const FluxTransformer& dit, const Dev& d, int64_t batch, int64_t width, int64_t height, int64_t txt,
                 const at::Tensor& image_embeds_add = {}) {
  const FluxDiTConfig& c = dit.config();
  const int64_t lh = flux_latent_size(height), lw = flux_latent_size(width), n = (lh / 2) * (lw / 2);
  FluxDiTInputs in;
  in.hidden_states = d.empty({batch, n, c.in_channels});
  in.encoder_hidden_states = d.empty({batch, txt, c.joint_attention_dim});
  in.pooled_projections = d.empty({batch, c.pooled_projection_dim});
  in.timestep = d.empty({batch});
  in.guidance = d.empty({batch});
  in.img_ids = latent_image_ids(lh, lw);
  in.txt_ids = text_ids(txt);
  in.image_embeds_add = image_embeds_add;
  (void)dit.forward(in);
}

std::string dit_label(int64_t batch, int64_t width, int64_t height, int64_t txt) {
  const int64_t n = (flux_latent_size(height) / 2) * (flux_latent_size(width) / 2);
  return "forward B=" + std::to_string(batch) + " " + std::to_string(width) + "x" + std::to_string(height) +
         " (N=" + std::to_string(n) + " image + T=" + std::to_string(txt) + " text tokens)";
}

void plan_vae(std::vector<ComponentPlan>& out, const std::string& flux_dir, int64_t batch, int64_t width,
              int64_t height, const RuntimeOptions& rt) {
  const std::string dir = sub(flux_dir, "vae");
  ComponentPlan c = component("flux_vae", dir, Checkpoint::open(dir));
  std::optional<FluxVae> m;
  step(c, "load", [&] { m = FluxVae::load(dir, rt); }, false);
  const int64_t lh = flux_latent_size(height), lw = flux_latent_size(width);
  step(c, "decode latents " + dims({batch, 16, lh, lw}), [&] {
    (void)m->decode(Dev(rt).empty({batch, m->config().latent_channels, lh, lw}));
  });
  out.push_back(std::move(c));
}

}  // namespace

std::vector<ComponentPlan> plan_flux(const std::string& flux_dir, const FluxRequest& req, const DryRunOptions& opt) {
  c10::InferenceMode guard;
  const ParallelScope parallel_scope(opt.rt);
  const RuntimeOptions& rt = opt.rt;
  const Dev d(rt);
  std::vector<ComponentPlan> out;
  plan_text_encoders(out, flux_dir, req.batch, req.t5_tokens, rt);
  {
    const std::string dir = sub(flux_dir, "transformer");
    ComponentPlan c = component("flux_dit", dir, Checkpoint::open(dir));
    std::optional<FluxTransformer> m;
    step(c, "load", [&] { m = FluxTransformer::load(dir, rt); }, false);
    step(c, dit_label(req.batch, req.width, req.height, req.t5_tokens),
         [&] { dit_forward(*m, d, req.batch, req.width, req.height, req.t5_tokens); });
    out.push_back(std::move(c));
  }
  plan_vae(out, flux_dir, req.batch, req.width, req.height, rt);
  return out;
}

std::vector<ComponentPlan> plan_uniworld(const std::string& uniworld_dir, const std::string& flux_dir,
                                         const std::string& siglip_dir, const UniWorldRequest& req,
                                         const DryRunOptions& opt) {
  c10::InferenceMode guard;
  const ParallelScope parallel_scope(opt.rt);
  const RuntimeOptions& rt = opt.rt;
  const Dev d(rt);
  std::vector<ComponentPlan> out;
  const Config tower = Config::load(uniworld_dir).sub("denoise_tower");
  const Checkpoint ckpt = Checkpoint::open(uniworld_dir);

  // The pipeline itself, loaded onto the dry run's device; its own stages run below, so the prompt,
  // the image placeholders and the text stream are built by the code that builds them for real.
  ComponentPlan vision = component("qwen2_5_vl_vision", uniworld_dir + " visual.*", ckpt, {"visual."});
  ComponentPlan lm = component("qwen2_5_vl_lm", uniworld_dir + " model.*, lm_head", ckpt, {"model.", "lm_head."});
  lm.tensor_parallel = tensor_ranks(opt.rt);
  ComponentPlan conn = component("uniworld_connectors", uniworld_dir + " denoise_tower.*_projector", ckpt,
                                 {"denoise_tower.denoise_projector.", "denoise_tower.siglip_projector."});
  ComponentPlan dit = component("uniworld_dit", uniworld_dir + " denoise_tower.denoiser.*", ckpt, {"denoise_tower.denoiser."});
  ComponentPlan sig = component("siglip_vision", siglip_dir, Checkpoint::open(siglip_dir), {"vision_model."});
  std::optional<UniWorldPipeline> pipe;
  step(lm, "load", [&] { pipe = UniWorldPipeline::load(uniworld_dir, flux_dir, siglip_dir, rt); }, false);
  if (!lm.ok()) vision.error = conn.error = dit.error = sig.error = lm.error;

  // Qwen2.5-VL: the vision tower on the references, then the LM prefill of the whole prompt.
  const std::vector<Image> refs(static_cast<size_t>(req.ref_images), grey(req.ref_width, req.ref_height));
  UniWorldPipeline::VlmPrompt prompt;
  step(lm, "prompt", [&] { prompt = pipe->build_prompt(req.prompt, refs); }, false);
  const Qwen2_5_VLPixels& pixels = prompt.pixels;
  const at::Tensor& ids = prompt.ids;
  if (req.ref_images > 0)
    step(vision, "forward patches " + dims(pixels.pixel_values.defined() ? pixels.pixel_values.sizes().vec() : std::vector<int64_t>{}), [&] {
      (void)pipe->vlm().visual().forward(pixels.pixel_values.to(d.act), pixels.grid_thw);
    });
  at::Tensor hidden;
  step(lm, "cache", [&] { lm.kv_cache_bytes = pipe->vlm().new_cache(1, ids.size(1)).bytes(); }, false);
  step(lm, "prefill " + dims(ids.defined() ? ids.sizes().vec() : std::vector<int64_t>{}) + " tokens (vision tower included)",
       [&] { hidden = pipe->vlm_hidden(prompt); });

  // SigLIP on each reference at its fixed input size.
  at::Tensor sig_features;
  if (req.ref_images > 0) {
    at::Tensor sig_pixels;
    step(sig, "pixels", [&] { sig_pixels = pipe->siglip_pixels(refs); }, false);
    step(sig, "forward pixels " + dims(sig_pixels.defined() ? sig_pixels.sizes().vec() : std::vector<int64_t>{}),
         [&] { sig_features = pipe->siglip_features(sig_pixels); });
  }

  // Connectors and the text stream: VLM rows, SigLIP rows before each <|vision_end|>, T5 appended.
  std::vector<ComponentPlan> text;
  plan_text_encoders(text, flux_dir, 1, req.t5 ? req.t5_tokens : 0, rt);
  at::Tensor stream;
  const int64_t joint = tower.get_int("output_hidden_size", 4096);
  step(conn, "project and assemble", [&] {
    stream = pipe->assemble(ids, hidden, sig_features, req.t5 ? d.empty({1, req.t5_tokens, joint}) : at::Tensor()).prompt_embeds;
  });
  const int64_t txt = stream.defined() ? stream.size(1) : 0;
  step(dit, dit_label(1, req.width, req.height, txt),
       [&] { dit_forward(pipe->flux().transformer(), d, 1, req.width, req.height, txt); });

  out.push_back(std::move(vision));
  out.push_back(std::move(lm));
  out.push_back(std::move(sig));
  out.push_back(std::move(conn));
  for (auto& c : text) out.push_back(std::move(c));
  out.push_back(std::move(dit));
  plan_vae(out, flux_dir, 1, req.width, req.height, rt);
  return out;
}

std::vector<ComponentPlan> plan_xomni(const std::string& xomni_dir, const std::string& flux_dir, const XOmniRequest& req,
                                      const DryRunOptions& opt) {
  c10::InferenceMode guard;
  const ParallelScope parallel_scope(opt.rt);
  const RuntimeOptions& rt = opt.rt;
  const Dev d(rt);
  std::vector<ComponentPlan> out;
  xomni_check_size(req.width, req.height);
  const int64_t rows = req.height / 16, cols = req.width / 16, codes = rows * cols;
  const Config cfg = Config::load(xomni_dir);
  const XOmniVisionConfig vision = XOmniVisionConfig::from(cfg);

  // The pipeline itself on the dry run's device: the prompt ids, the CFG rows and the components
  // come from its own code.
  const std::string vit_path = sub(xomni_dir, vision.siglip_path), vq_path = sub(xomni_dir, vision.projector_path);
  const std::string dit_dir = sub(xomni_dir, vision.decoder.model_path);
  ComponentPlan lm = component("xomni_lm", xomni_dir, Checkpoint::open(xomni_dir));
  lm.tensor_parallel = tensor_ranks(opt.rt);
  ComponentPlan vit = component("siglip_vq_vit", vit_path, Checkpoint::open(vit_path));
  ComponentPlan vq = component("siglip_vq_projector", vq_path, Checkpoint::open(vq_path));
  ComponentPlan dit = component("xomni_dit", dit_dir, Checkpoint::open(dit_dir));
  std::optional<XOmniPipeline> pipe;
  step(lm, "load", [&] { pipe = XOmniPipeline::load(xomni_dir, flux_dir, rt); }, false);
  if (!lm.ok()) vit.error = vq.error = dit.error = lm.error;

  // The LM: prefill of the prompt (and the CFG row, left-padded), then the last decode step.
  {
    const int64_t batch = req.cfg ? 2 : 1;
    at::Tensor ids, mask;
    step(lm, "prompt", [&] {
      const XOmniPrompt p = pipe->t2i_prompt(req.prompt, req.width, req.height);
      if (req.cfg) std::tie(ids, mask) = pipe->lm().cfg_rows(p.ids, p.negative_ids);
      else ids = p.ids;
    }, false);
    const int64_t prompt_len = ids.defined() ? ids.size(1) : 0;
    std::optional<nn::KVCache> cache;
    step(lm, "cache", [&] {
      cache.emplace(pipe->lm().new_cache(batch, prompt_len + codes));
      lm.kv_cache_bytes = cache->bytes();
    }, false);
    step(lm, "prefill " + dims({batch, prompt_len}) + " tokens, cache for " + std::to_string(prompt_len + codes),
         [&] { (void)pipe->lm().prefill(ids, *cache, XOmniMode::Image, mask); });
    step(lm, "decode step " + std::to_string(codes) + " of " + std::to_string(codes) + ", batch " + std::to_string(batch), [&] {
      cache->skip(codes - 1);
      const XOmniLM m = pipe->lm();
      (void)m.decode_one(at::full({batch}, m.config().text.vocab_size, at::TensorOptions().dtype(at::kLong).device(rt.torch_device())),
                         *cache, XOmniMode::Image);
    });
  }

  // SigLIP-VQ: the ViT-g and quantizer on an image of the request's size (chat), the decoder half
  // on the sampled codes (generation).
  at::Tensor features;
  {
    at::Tensor vit_out;
    step(vit, "encode pixels " + dims({1, 3, req.height, req.width}),
         [&] { vit_out = pipe->image_tokenizer().vit().forward(d.empty({1, 3, req.height, req.width})); });
    step(vq, "quantize " + std::to_string(codes) + " features", [&] { (void)pipe->image_tokenizer().vq().encode(vit_out, rows, cols); });
    step(vq, "decode " + std::to_string(codes) + " codes", [&] {
      features = pipe->image_tokenizer().decode(at::zeros({codes}, at::kLong), rows, cols);  // host codes, as the pipeline passes them
    });
  }

  // The FLUX decoder: the DiT with the feature injection at (rows, cols) * upscale_factor.
  const int64_t width = cols * vision.decoder.upscale_factor, height = rows * vision.decoder.upscale_factor;
  {
    const int64_t lh = flux_latent_size(height) / 2, lw = flux_latent_size(width) / 2;
    step(dit, dit_label(req.decoder_batch, width, height, req.t5_tokens), [&] {
      const XOmniDecoder& dec = pipe->decoder();
      at::Tensor add = dec.injection(features, rows, cols, lh, lw).expand({req.decoder_batch, -1, -1});
      dit_forward(dec.flux().transformer(), d, req.decoder_batch, width, height, req.t5_tokens, add);
    });
  }
  out.push_back(std::move(lm));
  out.push_back(std::move(vit));
  out.push_back(std::move(vq));
  out.push_back(std::move(dit));
  // The decoder's prompt and "" (true CFG): two rows through CLIP and T5.
  plan_text_encoders(out, flux_dir, 2, req.t5_tokens, rt);
  plan_vae(out, flux_dir, 1, width, height, rt);
  return out;
}

}  // namespace omniflux::plan
