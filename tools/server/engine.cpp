#include "engine.h"

#include <ctime>
#include <optional>
#include <sstream>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"

namespace omniflux::server {

namespace xo = omniflux::xomni;

struct Engine::Impl {
  Limits limits;
  Catalog catalog;
  std::optional<UniWorldPipeline> uniworld;
  std::optional<xo::XOmniPipeline> xomni;
  std::optional<FluxPipeline> flux;
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

const Catalog& Engine::catalog() const { return impl_->catalog; }

std::unique_ptr<Engine> Engine::load(const ServerOptions& o, const std::function<void(const std::string&)>& log) {
  auto m = std::make_unique<Impl>();
  m->limits = o.limits;
  m->catalog.created = static_cast<int64_t>(std::time(nullptr));
  if (!o.uniworld.empty()) {
    m->uniworld = UniWorldPipeline::load(o.uniworld, o.flux, o.siglip, o.rt);
    ModelCaps c;
    c.id = ModelId::UniWorld;
    c.generations = c.edits = c.chat = true;
    c.width = c.height = 1024;  // UniWorldOptions defaults (cli.py)
    c.steps = 28;
    c.guidance = 3.5;
    c.seed = 42;
    m->catalog.models.push_back(c);
    log("loaded uniworld-v1 from " + o.uniworld + " (FLUX.1-dev parts from " + o.flux + ", SigLIP from " + o.siglip + ")");
  }
  if (!o.xomni.empty()) {
    m->xomni = xo::XOmniPipeline::load(o.xomni, o.flux, o.rt);
    ModelCaps c;
    c.id = ModelId::XOmni;
    c.generations = m->xomni->has_decoder();
    c.chat = true;
    c.width = c.height = xo::kDefaultSide;  // generate.py --image-size
    c.steps = m->xomni->vision_config().decoder.num_inference_steps;
    c.guidance = 1.0;  // generate.py --cfg-scale
    c.seed = 1234;
    if (!c.generations) c.note = "started without --flux: chat only";
    m->catalog.models.push_back(c);
    log("loaded x-omni from " + o.xomni + (o.flux.empty() ? " (chat only: no --flux)" : " (decoder from " + o.flux + ")"));
  }
  if (o.serve_flux) {
    m->flux = FluxPipeline::load(o.flux, o.rt);
    ModelCaps c;
    c.id = ModelId::Flux;
    c.generations = true;
    c.width = c.height = 1024;  // FluxGenerateOptions defaults (diffusers)
    c.steps = 28;
    c.guidance = 3.5;
    c.seed = 0;
    m->catalog.models.push_back(c);
    log("loaded flux.1-dev from " + o.flux);
  }
  return std::unique_ptr<Engine>(new Engine(std::move(m)));
}

namespace {

// The "parameters" chunks of tools/uniworld.cpp, tools/flux.cpp and tools/xomni.cpp, without the
// server's folder paths.
std::string uniworld_params(const UniWorldOptions& o, int64_t w, int64_t h) {
  std::ostringstream s;
  s << o.prompt << "\n"
    << "Steps: " << o.steps << ", Guidance: " << o.guidance << ", Seed: " << o.seed << ", Size: " << w << "x" << h
    << ", T5: " << (o.use_t5 ? "on" : "off") << ", Reference images: " << o.images.size()
    << ", Model: UniWorld-V1, Sampler: flow-match Euler, Software: omniflux-server";
  return s.str();
}

std::string flux_params(const FluxGenerateOptions& o) {
  std::ostringstream s;
  s << o.prompt << "\n";
  if (o.negative_prompt) s << "Negative prompt: " << *o.negative_prompt << "\n";
  s << "Steps: " << o.steps << ", Guidance: " << o.guidance << ", True CFG: " << o.true_cfg_scale << ", Seed: " << o.seed
    << ", Size: " << o.width << "x" << o.height << ", Max sequence length: " << o.max_sequence_length
    << ", Model: FLUX.1-dev, Sampler: flow-match Euler, Software: omniflux-server";
  return s.str();
}

std::string xomni_params(const xo::ImageCodes& c, const xo::GenerateOptions& o, const xo::XOmniPipeline& p) {
  std::ostringstream s;
  s << c.prompt << "\n";
  if (!o.negative_prompt.empty()) s << "Negative prompt: " << o.negative_prompt << "\n";
  const auto sm = p.effective_sampling(o);
  s << "LM: cfg " << o.cfg_scale << ", temperature " << sm.temperature << ", top_k " << sm.top_k << ", top_p "
    << sm.top_p << ", min_p " << sm.min_p << ", seed " << o.seed << "; ";
  const auto& d = p.vision_config().decoder;
  s << "Decoder: steps " << o.decoder.steps.value_or(d.num_inference_steps) << ", cfg "
    << o.decoder.cfg_scale.value_or(d.cfg_scale) << ", cfg_2 " << o.decoder.cfg_scale_2.value_or(d.cfg_scale_2)
    << ", seed " << o.decoder.seed << ", Grid: " << c.rows << "x" << c.cols << ", Model: X-Omni, Software: omniflux-server";
  return s.str();
}

GeneratedImage finish_image(const Image& img, const std::string& params, uint64_t seed) {
  GeneratedImage g;
  g.png = encode_png(img, {{"parameters", params}});
  g.width = img.width;
  g.height = img.height;
  g.seed = seed;
  return g;
}

}  // namespace

void Engine::run_images(const ImageRequest& r, Job& job) const {
  const Impl& m = *impl_;
  for (int64_t i = 0; i < r.n; ++i) {
    const uint64_t seed = r.seed + static_cast<uint64_t>(i);
    auto progress = [&job, i](const std::string& stage, int64_t step, int64_t total) {
      return job.progress(i, stage, step, total);
    };
    std::optional<Image> img;
    std::string params;
    switch (r.model) {
      case ModelId::UniWorld: {
        UniWorldOptions o;
        o.prompt = r.prompt;
        o.images = r.images;
        o.width = r.width;
        o.height = r.height;
        o.snap_to_ratio = r.snap.value_or(true);  // cli.py snaps edits to the aspect-ratio table
        o.steps = r.steps;
        o.guidance = r.guidance;
        o.seed = seed;
        o.use_t5 = r.use_t5.value_or(true);
        o.task = UniWorldTask::Image;  // the images endpoints always answer with an image
        const auto [h, w] = m.uniworld->output_size(o);
        if (h * w > m.limits.max_pixels)
          throw ApiError(400,
                         "the output size snapped to the references is " + std::to_string(w) + "x" + std::to_string(h) +
                             ", more pixels than the limit of " + std::to_string(m.limits.max_pixels),
                         "size", "limit_exceeded");
        auto res = m.uniworld->run(o, progress);
        if (res) {
          if (!res->is_image) throw Error("the pipeline answered with text", "uniworld-v1 run", "an image", "text");
          img = std::move(res->image);
          params = uniworld_params(o, w, h);
        }
        break;
      }
      case ModelId::Flux: {
        FluxGenerateOptions o;
        o.prompt = r.prompt;
        o.negative_prompt = r.negative_prompt;
        o.width = r.width;
        o.height = r.height;
        o.steps = r.steps;
        o.guidance = r.guidance;
        o.true_cfg_scale = r.true_cfg_scale.value_or(1.0);
        o.seed = seed;
        img = m.flux->generate(o, progress);
        params = flux_params(o);
        break;
      }
      case ModelId::XOmni: {
        xo::GenerateOptions o;
        o.prompt = r.prompt;
        o.negative_prompt = r.negative_prompt.value_or("");
        o.width = r.width;
        o.height = r.height;
        o.cfg_scale = r.guidance;
        if (r.temperature) o.sampling.temperature = *r.temperature;
        if (r.top_k) o.sampling.top_k = *r.top_k;
        if (r.top_p) o.sampling.top_p = *r.top_p;
        if (r.min_p) o.sampling.min_p = *r.min_p;
        o.seed = seed;
        o.decoder.seed = seed;
        o.decoder.steps = r.steps;
        o.decoder.cfg_scale = r.decoder_cfg_scale;
        o.decoder.cfg_scale_2 = r.decoder_cfg_scale_2;
        // A cancelled job stops the token loop within one token.
        auto tokens = [&job, i](int64_t done, int64_t total) { return job.progress(i, "tokens", done, total); };
        std::optional<xo::ImageCodes> codes = m.xomni->generate_codes(o, tokens);
        if (!codes) throw Cancelled{};
        img = m.xomni->decode_codes(*codes, o.decoder, progress);
        params = xomni_params(*codes, o, *m.xomni);
        break;
      }
    }
    if (!img) throw Cancelled{};
    job.image(i, finish_image(*img, params, seed));
  }
}

void Engine::run_chat(const ChatRequest& r, Job& job) const {
  const Impl& m = *impl_;
  if (r.model == ModelId::XOmni) {
    job.check_cancelled();
    std::optional<std::string> answer =
        m.xomni->chat(r.images.at(0), r.text, [&job](const std::string& piece) { job.text(piece); }, r.max_tokens,
                      [&job](int64_t, int64_t) { return !job.cancelled(); });
    if (!answer) throw Cancelled{};
    job.set_answer(std::move(*answer));
    return;
  }
  if (r.model != ModelId::UniWorld) throw ApiError(400, "this model has no chat", "model", "unsupported_model");
  UniWorldOptions o;
  o.prompt = r.text;
  o.images = r.images;
  o.task = UniWorldTask::Text;  // app.py's text answer: greedy, special tokens skipped
  o.max_new_tokens = r.max_tokens;
  auto res = m.uniworld->run(o, [&job](const std::string& stage, int64_t step, int64_t total) {
    return job.progress(0, stage, step, total);
  });
  if (!res) throw Cancelled{};
  job.text(res->text);
  job.set_answer(std::move(res->text));
}

}  // namespace omniflux::server
