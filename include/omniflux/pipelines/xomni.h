#pragma once
// X-Omni end to end (X-Omni-Team/X-Omni generate.py and chat.py; docs/models/xomni.md):
//   text to image: prompt + "<SOM>{h} {w}<IMAGE>" -> XOmniLM samples exactly h*w image codes
//                  (optional CFG with the bare prefix as a second batch row) -> SigLIP-VQ decode
//                  -> [h*w, 1536] features -> the fine-tuned FLUX DiT of the X-Omni folder's
//                  diffusers/ (feature injection) with FLUX.1-dev's CLIP-L, T5, VAE -> image.
//   chat:          image -> SigLIP-VQ codes -> "<SOM>h w<IMAGE><MM-Token-..>...<EOM>\n" + question
//                  -> chat template -> greedy decoding to <|im_end|>.
//
//   auto xo = XOmniPipeline::load("X-Omni-En", "FLUX.1-dev");
//   XOmniCodes c = *xo.generate_codes(opt);      // inspect / edit the codes
//   Image img = *xo.decode_codes(c, opt.decoder);
//   std::string answer = *xo.chat(image, "Describe it.", [](const std::string& piece) { ...; return true; });
// Each long call takes a ProgressCallback (omniflux/progress.h) that cancels by returning false
// (within one token or one denoising step); the call then returns nullopt.
//
// Facts docs/models/xomni.md marks as inferred are read from the checkpoint and checked (see
// XOmniDecoder::detect_injection and XOmniVisionConfig::from).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/config.h"
#include "omniflux/io/image.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/siglip_vq.h"
#include "omniflux/models/xomni_lm.h"
#include "omniflux/pipelines/chat.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/progress.h"
#include "omniflux/residency.h"
#include "omniflux/runtime.h"
#include "omniflux/sampling/token_sampling.h"
#include "omniflux/text/tokenizer.h"

namespace omniflux {

// ---- config.json vision_config (modeling_xomni.py init_vision) -----------------------------------

struct XOmniDecoderConfig {
  std::string model_path = "diffusers";  // subfolder of the X-Omni folder
  int64_t upscale_factor = 16;           // output pixels per code, each side
  int64_t num_inference_steps = 28;
  double cfg_scale = 1.0;    // text guidance (true_cfg_scale)
  double cfg_scale_2 = 1.0;  // image-feature guidance (true_cfg_scale_2); see XOmniDecoder
};

struct XOmniVisionConfig {
  std::string dtype;  // vision_config.dtype, informational (the runtime dtype is used)
  AnyresTransform transform;
  std::string siglip_name, siglip_path, projector_path;
  SiglipViTConfig vit;  // from siglip_name (known names only) or an explicit encoder.siglip_config
  SiglipVQConfig vq;
  XOmniDecoderConfig decoder;
  // Reads config.json's vision_config; throws Error when it is absent, when a required field
  // (encoder.siglip_path, encoder.projector_path, decoder.upscale_factor,
  // decoder.num_inference_steps, decoder.cfg_scale) is missing, or when siglip_name is unknown and
  // no siglip_config gives the ViT sizes.
  static XOmniVisionConfig from(const Config& model_config);
};

// ---- sampling defaults -----------------------------------------------------------------------------

// generate.py: GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, min_p=0.03, ...) with
// top_k left at HF's default 50.
inline sampling::SamplingOptions xomni_sampling_defaults() { return XOmniLM::ImageGeneration::xomni_defaults(); }
// Hugging Face's merge (transformers >= 4.50 _prepare_generation_config): when the model's
// generation_config.json was written by transformers >= 4.50, every field of `user` still equal
// to the GenerationConfig() default (temperature 1, top_k 50, top_p 1, min_p off, repetition
// penalty 1) takes the file's value when that differs. Covers temperature, top_k, top_p, min_p,
// repetition_penalty. `generation_config` may be null (no file: `user` unchanged).
sampling::SamplingOptions xomni_merge_generation_config(const sampling::SamplingOptions& user, const Config* generation_config);

// ---- the text-to-image prompt ----------------------------------------------------------------------

// Checks an output size: each side a multiple of 16 (the code grid is side / 16) within
// [16, kFluxMaxSide]. Throws Error naming the side.
void xomni_check_size(int64_t width, int64_t height);
constexpr int64_t kXOmniDefaultSide = 1152;  // generate.py --image-size: 72 x 72 = 5184 codes
constexpr int64_t kXOmniAnswerTokens = 512;  // chat.py: max_new_tokens=512

struct XOmniPrompt {
  at::Tensor ids;           // [1, L]: tokenizer(prompt + prefix), no chat template
  at::Tensor negative_ids;  // [1, L2]: the prefix alone (the CFG row)
  int64_t rows = 0, cols = 0;
};

// ---- codes and decoding -----------------------------------------------------------------------------

struct XOmniCodes {
  std::string prompt;          // the decoder's text prompt (text before <SOM>)
  int64_t rows = 0, cols = 0;  // token grid
  std::vector<int64_t> codes;  // rows * cols codes in [0, image_vocab_size), row-major
};

struct XOmniDecodeOptions {
  // Overrides of vision_config.decoder.
  std::optional<int64_t> steps;
  std::optional<double> cfg_scale, cfg_scale_2;
  uint64_t seed = 1234;  // FLUX noise (generate.py re-seeds before mmdecode)
  VaeTilingMode vae_tiling = VaeTilingMode::Auto;
};

struct XOmniOptions {
  std::string prompt;
  int64_t width = kXOmniDefaultSide, height = kXOmniDefaultSide;
  double cfg_scale = 1.0;  // LM classifier-free guidance (generate.py --cfg-scale)
  // Text of the CFG row before its "<SOM>h w<IMAGE>" prefix. generate.py's row is the bare prefix,
  // which "" keeps; other text is ours (a negative prompt for the LM's guidance).
  std::string negative_prompt;
  // Sampling as the user set it; merged with generation_config.json as Hugging Face does.
  sampling::SamplingOptions sampling = xomni_sampling_defaults();
  uint64_t seed = 1234;
  XOmniDecodeOptions decoder;
};

// mmdecode: a generated id sequence as text and images.
struct XOmniMMDecoded {
  std::vector<std::string> texts;
  std::vector<XOmniCodes> images;  // at most one per <SOM>..<EOM> chunk
};

// The diffusion decoder: the X-Omni diffusers/ FLUX DiT with its SigLIP feature injection.
//
// Feature injection (docs/models/xomni.md §4.2, leading design, detected from the weight names): the
// checkpoint holds the standard diffusers FLUX keys plus exactly one Linear P.weight
// [inner_dim, z_channels] (and optionally P.bias [inner_dim]). The features [h*w, z_channels]
// are resized bicubically (align_corners=False) to the packed latent grid when it differs, then
// P(features) is added to the patch-embedded image tokens (FluxDiTInputs::image_embeds_add). Any
// other extra keys are an Error listing them.
//
// Guidance with two scales (X-Omni's true_cfg_scale / true_cfg_scale_2; the reference body was not
// available, so this is the chosen formula): three predictions
//   c = v(prompt, features), n = v("", features), u = v("", no features)
//   v = u + s2 * (n - u) + s1 * (c - n)       s1 = cfg_scale (text), s2 = cfg_scale_2 (features)
// s2 = 1 gives the stock true CFG with the features in both branches; s1 = s2 = s gives
// u + s (c - u), UniAR's single-scale form (zeros for the features in the unconditional branch);
// s1 = s2 = 1 is the conditional prediction alone. Predictions whose coefficient is 0 are skipped;
// the others run as one batch.
class XOmniDecoder {
 public:
  struct Injection {
    std::string prefix;  // e.g. "siglip_embedder"
    bool bias = false;
  };
  // Detects the injection layout among the keys of `store` that a FLUX transformer with `cfg` does
  // not use; throws Error listing the unrecognised keys.
  static Injection detect_injection(const std::vector<std::string>& extra_keys, const WeightStore& store,
                                    const FluxDiTConfig& cfg, int64_t z_channels);
  // x_omni_dir/<decoder.model_path> for the transformer; flux_dir for CLIP-L, T5, VAE, scheduler.
  // `group`: the residency group of the pipeline it belongs to (a new one when null).
  static XOmniDecoder load(const std::string& x_omni_dir, const std::string& flux_dir, const XOmniVisionConfig& vision,
                           const RuntimeOptions& rt = {}, std::shared_ptr<ResidencyGroup> group = nullptr);

  // features [h*w, z_channels] (row-major grid) -> image of (w*uf) x (h*uf); nullopt when cancelled.
  std::optional<Image> decode(const at::Tensor& features, int64_t rows, int64_t cols, const std::string& prompt,
                              const XOmniDecodeOptions& opt, const ProgressCallback& progress = {}) const;
  // The injected term [B, N, inner] for features [h*w, z] on a packed latent grid lh x lw.
  at::Tensor injection(const at::Tensor& features, int64_t rows, int64_t cols, int64_t lh, int64_t lw) const;

  const FluxPipeline& flux() const { return flux_; }
  const Injection& injection_layout() const { return layout_; }
  const XOmniDecoderConfig& config() const { return cfg_; }

 private:
  FluxPipeline flux_;
  XOmniDecoderConfig cfg_;
  Injection layout_;
  at::Tensor proj_w_, proj_b_;
};

class XOmniPipeline {
 public:
  // model_dir: the X-Omni folder (config.json with vision_config, LM safetensors, tokenizer.json,
  // the ViT and projector files, diffusers/). flux_dir: FLUX.1-dev; empty = no decoder (codes and
  // chat only; decode_codes then throws).
  static XOmniPipeline load(const std::string& model_dir, const std::string& flux_dir, const RuntimeOptions& rt = {});

  // The prompt and CFG prefix ids for a width x height image (checked with xomni_check_size); the
  // CFG row is `negative_prompt` + prefix, encoded as the prompt row is, when it is not empty.
  XOmniPrompt t2i_prompt(const std::string& prompt, int64_t width, int64_t height,
                       const std::string& negative_prompt = {}) const;
  // The sampling actually used: opt.sampling merged with generation_config.json, seeded with opt.seed,
  // suppressing <SOM>, <EOM>, <IMAGE>.
  sampling::SamplingOptions effective_sampling(const XOmniOptions& opt) const;

  // Autoregressive phase: exactly rows * cols codes; `progress` gets ("tokens", made, rows * cols)
  // after each code; nullopt when it cancelled.
  std::optional<XOmniCodes> generate_codes(const XOmniOptions& opt, const ProgressCallback& progress = {}) const;
  // Decoder phase: VQ decode, FLUX with the features.
  std::optional<Image> decode_codes(const XOmniCodes& codes, const XOmniDecodeOptions& opt = {},
                                    const ProgressCallback& progress = {}) const;
  // Both phases: progress stages "tokens", then the decoder's ("encode_prompt", "denoise", "decode").
  std::optional<Image> generate(const XOmniOptions& opt, const ProgressCallback& progress = {}) const;

  // mmdecode: ids (prompt + prefix + codes, optionally ending in <EOM>) -> texts and image codes.
  XOmniMMDecoded mmdecode(const std::vector<int64_t>& ids) const;
  // XOmniCodes -> the ids of "<SOM>h w<IMAGE><MM-Token-..>...<EOM>" (tokenize_image's text).
  std::string image_text(const XOmniCodes& codes) const;

  // Image -> SigLIP-VQ codes (any-resolution rules of vision_config.transform; Error otherwise).
  XOmniCodes tokenize_image(const Image& image) const;
  // chat.py: greedy answer to `question` about `image`, streamed through `stream`. `progress` gets
  // ("answer", tokens, max_new_tokens) after each token; nullopt when either cancelled.
  std::optional<std::string> chat(const Image& image, const std::string& question, const ChatStream& stream = {},
                                  int64_t max_new_tokens = kXOmniAnswerTokens, const ProgressCallback& progress = {}) const;
  // A conversation: system, user and assistant turns, text only or with one image in all (chat.py
  // takes one). An image becomes its code text and a newline at the start of its turn, as chat.py
  // writes it; a system turn replaces the template's default system prompt. Greedy with the
  // generation config's repetition penalty unless the options say otherwise; ends at <|im_end|>.
  // nullopt when `stream` or `progress` ("answer", tokens, max_new_tokens) cancelled.
  std::optional<ChatAnswer> chat(const std::vector<ChatTurn>& turns, const ChatOptions& options = {},
                                 const ChatStream& stream = {}, const ProgressCallback& progress = {}) const;
  // The chat prompt ids [1, L] for image codes and a question, and for a conversation.
  at::Tensor chat_prompt(const XOmniCodes& image, const std::string& question) const;
  at::Tensor chat_prompt(const std::vector<ChatTurn>& turns) const;

  // What special-token text ("<SOM>", "<IMAGE>", "<|im_start|>") inside a prompt or question
  // becomes (default: text; docs/validation.md). This object's setting; copies keep their own.
  void set_prompt_special_tokens(text::PromptSpecialTokens mode) { special_tokens_ = mode; }
  text::PromptSpecialTokens prompt_special_tokens() const { return special_tokens_; }

  // Components are handles, built on the device if offload had released them.
  XOmniLM lm() const;
  const text::Tokenizer& tokenizer() const;
  const XOmniVisionConfig& vision_config() const;
  SiglipVQTokenizer image_tokenizer() const;
  bool has_decoder() const;
  const XOmniDecoder& decoder() const;

  struct Impl;

 private:
  ChatAnswer answer(const at::Tensor& ids, sampling::TextGenerationOptions g, const ChatStream& stream) const;
  std::shared_ptr<const Impl> impl_;
  text::PromptSpecialTokens special_tokens_ = text::PromptSpecialTokens::Text;
};

}  // namespace omniflux
