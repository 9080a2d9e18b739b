#include "engine.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include <unistd.h>
#include <optional>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "png_parameters.h"
#include "ranks.h"
#include "omniflux/io/config.h"
#include "omniflux/io/image.h"
#include "omniflux/plan.h"
#include "omniflux/runtime.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"

namespace omniflux::server {


struct Engine::Impl {
  Limits limits;
  Catalog catalog;
  ServerOptions opt;
  int64_t budget = 0;     // bytes; 0 = admission off
  std::string budget_source;
  std::string weights;    // the storage format the plan counts: fp32, bf16 or fp8
  mutable std::mutex plan_m;
  mutable std::map<std::string, int64_t> planned;  // request shape -> planned peak bytes
  std::optional<UniWorldPipeline> uniworld;
  std::optional<XOmniPipeline> xomni;
  std::optional<FluxPipeline> flux;
  // Several ranks: the messages between them, and what rank 0 does when the server must stop.
  std::optional<RankLink> link;
  std::function<void(const std::string&, int)> stop;
  mutable std::atomic<bool> broken{false};  // a collective failed: no more messages
  void request_stop(const std::string& why, int code) const {
    if (stop) stop(why, code);
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

const Catalog& Engine::catalog() const { return impl_->catalog; }

namespace {

bool folder_quantized(const std::string& dir) {
  for (const char* rel : {"config.json", "transformer/config.json"}) {
    const std::string p = dir + "/" + rel;
    std::error_code ec;
    if (!dir.empty() && std::filesystem::is_regular_file(p, ec) && Config::load(p).has("quantization_config")) return true;
  }
  return false;
}

int64_t physical_ram_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

std::string gib(int64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f GiB", static_cast<double>(bytes) / static_cast<double>(int64_t(1) << 30));
  return b;
}

}  // namespace

std::unique_ptr<Engine> Engine::load(const ServerOptions& o, const std::function<void(const std::string&)>& log) {
  auto m = std::make_unique<Impl>();
  m->limits = o.limits;
  m->opt = o;
  if (o.plan_admission) {
    const c10::Device dev = o.rt.torch_device();
    if (dev.is_cuda()) {
      if (o.rt.max_vram_gb > 0) {
        m->budget = static_cast<int64_t>(o.rt.max_vram_gb * double(int64_t(1) << 30));
        m->budget_source = "--max-vram";
      } else {
        m->budget = cuda_memory_info(dev).first;  // before the models load: what they may take in all
        m->budget_source = "the free memory of " + dev.str() + " at start";
      }
    } else {
      const double gb = o.max_ram_gb > 0 ? o.max_ram_gb : 0.75 * static_cast<double>(physical_ram_bytes()) / double(int64_t(1) << 30);
      m->budget = static_cast<int64_t>(gb * double(int64_t(1) << 30));
      m->budget_source = o.max_ram_gb > 0 ? "--max-ram" : "3/4 of the physical RAM";
    }
    const bool q = folder_quantized(o.uniworld) || folder_quantized(o.xomni) || folder_quantized(o.flux);
    m->weights = q ? "fp8" : o.rt.compute_dtype() == at::kFloat ? "fp32" : "bf16";
    log("admission by plan: budget " + gib(m->budget) + " (" + m->budget_source + "), offload " +
        offload_name(o.rt.offload) + ", " + m->weights + " weights");
  }
  if (o.rt.parallel) {
    const c10::Device dev = o.rt.torch_device();  // NCCL wants CUDA tensors, Gloo CPU ones
    m->link.emplace(o.rt.parallel->world(), dev.is_cuda() ? dev : c10::Device(c10::kCPU));
  }
  m->catalog.created = static_cast<int64_t>(std::time(nullptr));
  if (!o.uniworld.empty()) {
    m->uniworld = UniWorldPipeline::load(o.uniworld, o.flux, o.siglip, o.rt);
    ModelCaps c = default_caps(ModelId::UniWorld);
    c.vocab_size = m->uniworld->vlm().config().text.vocab_size;
    m->catalog.models.push_back(c);
    log("loaded uniworld-v1 from " + o.uniworld + " (FLUX.1-dev parts from " + o.flux + ", SigLIP from " + o.siglip + ")");
  }
  if (!o.xomni.empty()) {
    m->xomni = XOmniPipeline::load(o.xomni, o.flux, o.rt);
    ModelCaps c = default_caps(ModelId::XOmni);
    c.generations = m->xomni->has_decoder();
    c.steps = m->xomni->vision_config().decoder.num_inference_steps;
    c.vocab_size = m->xomni->lm().config().text.vocab_size;  // text logits
    if (!c.generations) c.note = "started without --flux: chat only";
    m->catalog.models.push_back(c);
    log("loaded x-omni from " + o.xomni + (o.flux.empty() ? " (chat only: no --flux)" : " (decoder from " + o.flux + ")"));
  }
  if (o.serve_flux) {
    m->flux = FluxPipeline::load(o.flux, o.rt);
    m->catalog.models.push_back(default_caps(ModelId::Flux));
    log("loaded flux.1-dev from " + o.flux);
  }
  return std::unique_ptr<Engine>(new Engine(std::move(m)));
}

namespace {

GeneratedImage finish_image(const Image& img, const std::string& params, uint64_t seed, const ImageRequest& r) {
  GeneratedImage g;
  g.format = r.output_format;
  // OpenAI's output_compression is a compression level (100 = best quality); stb's quality 1..100.
  g.png = r.output_format == "jpeg" ? encode_jpeg(img, static_cast<int>(std::max<int64_t>(1, r.output_compression)))
                                    : encode_png(img, {{"parameters", params}});
  g.width = img.width;
  g.height = img.height;
  g.seed = seed;
  return g;
}

}  // namespace

int64_t Engine::budget_bytes() const { return impl_->budget; }
const std::string& Engine::budget_source() const { return impl_->budget_source; }

void Engine::memory_gauges(Metrics::Gauges& g) const {
  const c10::Device dev(impl_->opt.rt.device);
  if (!dev.is_cuda()) return;
  const CudaAllocatorStats s = cuda_allocator_stats(dev);
  g.cuda_allocated = s.allocated;
  g.cuda_reserved = s.reserved;
}

namespace {

// The planned peak of one request shape under the server's offload mode (cached). `plan` runs the
// dry run; `key` names the shape.
int64_t planned_peak(const Engine::Impl& m, const std::string& key,
                     const std::function<std::vector<plan::ComponentPlan>()>& plan) {
  std::lock_guard<std::mutex> lock(m.plan_m);  // one dry run at a time; the worker is not slowed
  if (auto it = m.planned.find(key); it != m.planned.end()) return it->second;
  const std::vector<plan::ComponentPlan> plans = plan();
  for (const auto& c : plans)
    if (!c.ok()) throw ApiError(500, "the memory plan of this request failed: " + c.name + ": " + c.error, "", "plan_failed");
  const int64_t peak = plan::estimate_offload(plans, m.weights).peak(m.opt.rt.offload);
  if (m.planned.size() > 4096) m.planned.clear();
  m.planned[key] = peak;
  return peak;
}

void refuse_if_over(const Engine::Impl& m, int64_t peak, const std::string& what) {
  if (peak <= m.budget) return;
  throw ApiError(422,
                 what + " is planned to need " + gib(peak) + " at its peak (offload " + offload_name(m.opt.rt.offload) +
                     ", " + m.weights + " weights), more than the budget of " + gib(m.budget) + " (" + m.budget_source +
                     "); ask for a smaller size or fewer images, or start the server with more memory or another --offload",
                 "", "insufficient_memory");
}

}  // namespace

void Engine::check_fits(const ImageRequest& r) const {
  const Impl& m = *impl_;
  if (!m.opt.plan_admission) return;
  const std::string size = std::to_string(r.width) + "x" + std::to_string(r.height);
  switch (r.model) {
    case ModelId::UniWorld: {
      plan::UniWorldRequest q;
      UniWorldOptions o;
      o.width = r.width, o.height = r.height, o.images = r.images, o.snap_to_ratio = r.snap.value_or(true);
      std::tie(q.height, q.width) = UniWorldPipeline::output_size(o);
      q.ref_images = static_cast<int64_t>(r.images.size());
      if (!r.images.empty()) {  // the largest reference sets the VLM's and SigLIP's inputs
        q.ref_width = q.ref_height = 0;
        for (const Image& im : r.images) q.ref_width = std::max<int64_t>(q.ref_width, im.width), q.ref_height = std::max<int64_t>(q.ref_height, im.height);
      }
      q.prompt = r.prompt;
      q.t5 = r.use_t5.value_or(true);
      const std::string key = "uniworld " + std::to_string(q.width) + "x" + std::to_string(q.height) + " refs " +
                              std::to_string(q.ref_images) + " " + std::to_string(q.ref_width) + "x" + std::to_string(q.ref_height) +
                              " t5 " + std::to_string(q.t5) + " prompt " + std::to_string(r.prompt.size() / 64);
      refuse_if_over(m, planned_peak(m, key, [&] { return plan::plan_uniworld(m.opt.uniworld, m.opt.flux, m.opt.siglip, q); }),
                     "this " + std::to_string(q.width) + "x" + std::to_string(q.height) + " uniworld-v1 request");
      return;
    }
    case ModelId::XOmni: {
      plan::XOmniRequest q;
      q.width = r.width, q.height = r.height, q.cfg = r.guidance != 1.0, q.prompt = r.prompt;
      const std::string key = "xomni " + size + " cfg " + std::to_string(q.cfg) + " prompt " + std::to_string(r.prompt.size() / 64);
      refuse_if_over(m, planned_peak(m, key, [&] { return plan::plan_xomni(m.opt.xomni, m.opt.flux, q); }),
                     "this " + size + " x-omni request");
      return;
    }
    case ModelId::Flux: {
      plan::FluxRequest q;
      q.width = r.width, q.height = r.height;
      refuse_if_over(m, planned_peak(m, "flux " + size, [&] { return plan::plan_flux(m.opt.flux, q); }),
                     "this " + size + " flux.1-dev request");
      return;
    }
  }
}

void Engine::check_fits(const ChatRequest& r) const {
  const Impl& m = *impl_;
  if (!m.opt.plan_admission) return;
  int64_t w = 0, h = 0;
  for (const ChatTurn& t : r.turns)
    for (const ChatPart& p : t.parts)
      if (p.is_image) w = std::max<int64_t>(w, p.image.width), h = std::max<int64_t>(h, p.image.height);
  // A chat runs the LM (and the vision encoder) only: the image plans at their smallest output
  // size stand for it, with the conversation's images.
  if (r.model == ModelId::UniWorld) {
    plan::UniWorldRequest q;
    q.width = q.height = 256;
    q.ref_images = r.images;
    if (r.images > 0) q.ref_width = w, q.ref_height = h;
    const std::string key = "uniworld chat refs " + std::to_string(r.images) + " " + std::to_string(w) + "x" + std::to_string(h);
    refuse_if_over(m, planned_peak(m, key, [&] { return plan::plan_uniworld(m.opt.uniworld, m.opt.flux, m.opt.siglip, q); }),
                   "this uniworld-v1 chat request");
  } else if (r.model == ModelId::XOmni && !m.opt.flux.empty()) {
    plan::XOmniRequest q;  // the plan needs the decoder's folder; without it only the LM is loaded
    q.width = q.height = 256;
    q.cfg = false;
    refuse_if_over(m, planned_peak(m, "xomni chat", [&] { return plan::plan_xomni(m.opt.xomni, m.opt.flux, q); }),
                   "this x-omni chat request");
  }
}

namespace {

// One image request on this rank. Only rank 0 encodes the images (the others drop them).
void images_here(const Engine::Impl& m, const ImageRequest& r, Job& job) {
  ImageUsage usage;
  switch (r.model) {
    case ModelId::UniWorld: {  // the VLM prompt: text ids and the <|image_pad|> ids of the references
      const at::Tensor ids = m.uniworld->build_prompt(r.prompt, r.images).ids;
      usage.image_tokens = ids.eq(m.uniworld->vlm().config().image_token_id).sum().item<int64_t>();
      usage.text_tokens = ids.size(1) - usage.image_tokens;
      break;
    }
    case ModelId::XOmni: {  // the LM prompt; each image's rows x cols codes are its output
      const XOmniPrompt p = m.xomni->t2i_prompt(r.prompt, r.width, r.height, r.negative_prompt.value_or(""));
      usage.text_tokens = p.ids.size(1);
      usage.output_tokens = r.n * p.rows * p.cols;
      break;
    }
    case ModelId::Flux:  // T5's ids without its padding (T5's pad id is 0)
      usage.text_tokens = m.flux->t5_ids(r.prompt, 512).ne(0).sum().item<int64_t>();
      break;
  }
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
          Image* made = std::get_if<Image>(&*res);
          if (!made) throw Error("the pipeline answered with text", "uniworld-v1 run", "an image", "text");
          img = std::move(*made);
          params = cli::uniworld_parameters(o, w, h, "UniWorld-V1", "omniflux-server");
        }
        break;
      }
      case ModelId::Flux: {
        FluxOptions o;
        o.prompt = r.prompt;
        o.negative_prompt = r.negative_prompt;
        o.width = r.width;
        o.height = r.height;
        o.steps = r.steps;
        o.guidance = r.guidance;
        o.true_cfg_scale = r.true_cfg_scale.value_or(1.0);
        o.seed = seed;
        img = m.flux->generate(o, progress);
        params = cli::flux_parameters(o, "FLUX.1-dev", "omniflux-server");
        break;
      }
      case ModelId::XOmni: {
        XOmniOptions o;
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
        int64_t counted = 0;
        auto tokens = [&job, i, &counted](const std::string& stage, int64_t done, int64_t total) {
          job.count_tokens(done - counted);
          counted = std::max(counted, done);
          return job.progress(i, stage, done, total);
        };
        std::optional<XOmniCodes> codes = m.xomni->generate_codes(o, tokens);
        if (!codes) throw Cancelled{};
        img = m.xomni->decode_codes(*codes, o.decoder, progress);
        params = cli::xomni_parameters(*codes, o, *m.xomni, true, "X-Omni", "omniflux-server");
        break;
      }
    }
    if (!img) throw Cancelled{};
    if (m.opt.rt.writes_output()) job.image(i, finish_image(*img, params, seed, r));
  }
  job.set_usage(usage);
}

// One chat request on this rank with its seed (drawn by rank 0 when the request had none).
void chat_here(const Engine::Impl& m, const ChatRequest& r, uint64_t seed, Job& job) {
  ChatResult result;
  for (int64_t i = 0; i < r.n; ++i) {
    ChatOptions o = r.options;
    o.seed = seed + static_cast<uint64_t>(i);
    // A disconnect or shutdown cancels the job: the token loop stops within one token.
    auto progress = [&job](const std::string&, int64_t, int64_t) {
      job.count_tokens(1);
      return job.keep_going();
    };
    auto stream = [&job, i](const std::string& piece) { return job.text(i, piece); };
    std::optional<ChatAnswer> a = r.model == ModelId::XOmni ? m.xomni->chat(r.turns, o, stream, progress)
                                                            : m.uniworld->chat(r.turns, o, stream, progress);
    if (!a) throw Cancelled{};
    result.prompt_tokens = a->prompt_tokens;  // the same conversation for every choice: counted once
    result.completion_tokens += a->completion_tokens;
    result.choices.push_back({a->text, a->finish == sampling::FinishReason::Length ? "length" : "stop"});
  }
  job.set_answer(std::move(result));
}

// Runs `work` here; with several ranks, rank 0 first sends the request (`payload()`) to the others,
// and every callback of the job agrees with them on stopping. A collective that fails stops the
// server (exit code 1) and fails the job with 503: the ranks are out of step for good.
void run_on_ranks(const Engine::Impl& m, Job& job, WorkKind kind, const std::function<std::string()>& payload,
                  const std::function<void()>& work) {
  if (!m.link) return work();
  try {
    if (m.link->send(kind, payload())) m.request_stop("another rank asked to stop (a signal reached it); shutting down", 0);
    job.set_agree([&m](bool cancelled) {
      bool voted = false;
      const bool stop = m.link->agree_stop(cancelled, &voted);
      if (voted) m.request_stop("another rank asked to stop (a signal reached it); shutting down", 0);
      return stop;
    });
    work();
  } catch (const Error& e) {
    if (!is_collective_failure(e)) throw;
    m.broken = true;
    m.request_stop(std::string("the ranks can no longer run requests together: ") + e.what() + "; shutting down", 1);
    throw ApiError(503, std::string("a rank of this server failed while running this request (") + e.what() + "); the server stops",
                   "", "rank_failed");
  }
}

}  // namespace

void Engine::run_images(const ImageRequest& r, Job& job) const {
  const Impl& m = *impl_;
  run_on_ranks(m, job, WorkKind::Images, [&] { return encode_request(r); }, [&] { images_here(m, r, job); });
}

void Engine::run_chat(const ChatRequest& r, Job& job) const {
  const Impl& m = *impl_;
  if (r.model != ModelId::XOmni && r.model != ModelId::UniWorld)
    throw ApiError(400, "this model has no chat", "model", "unsupported_model");
  // Drawn once here: the other ranks get it with the request, so all sample the same tokens.
  const uint64_t seed = r.seed ? *r.seed : std::random_device{}() * 0x100000000ull + std::random_device{}();
  run_on_ranks(
      m, job, WorkKind::Chat,
      [&] {
        ChatRequest sent = r;
        sent.seed = seed;
        return encode_request(sent);
      },
      [&] { chat_here(m, r, seed, job); });
}

// ---- several ranks ---------------------------------------------------------------------------------

int Engine::rank() const { return impl_->link ? impl_->link->rank() : 0; }
int Engine::world_size() const { return impl_->opt.rt.parallel ? impl_->opt.rt.parallel->world_size() : 1; }

void Engine::on_stop(std::function<void(const std::string&, int)> f) { impl_->stop = std::move(f); }

std::chrono::milliseconds Engine::heartbeat_every() const {
  if (!impl_->link) return std::chrono::milliseconds(0);
  // A quarter of the collective timeout, at most 30 s: a late heartbeat never times a rank out.
  const double s = std::min(30.0, impl_->opt.rt.parallel->options().timeout_s / 4);
  return std::chrono::milliseconds(std::max<int64_t>(10, static_cast<int64_t>(s * 1000)));
}

void Engine::heartbeat() const {
  const Impl& m = *impl_;
  if (!m.link || m.broken) return;
  try {
    if (m.link->send(WorkKind::Heartbeat)) m.request_stop("another rank asked to stop (a signal reached it); shutting down", 0);
  } catch (const Error& e) {
    m.broken = true;
    m.request_stop(std::string("the ranks can no longer run requests together: ") + e.what() + "; shutting down", 1);
  }
}

void Engine::end_followers() const {
  const Impl& m = *impl_;
  if (!m.link || m.broken) return;
  try {
    m.link->send(WorkKind::Shutdown);
  } catch (const Error& e) {
    m.broken = true;
    m.request_stop(std::string("the other ranks did not take the shutdown: ") + e.what(), 1);
  }
}

int Engine::follow(const std::atomic<bool>& stop_vote, const std::function<void(const std::string&)>& log) const {
  const Impl& m = *impl_;
  if (!m.link) return 0;
  for (;;) {
    std::optional<ImageRequest> image;
    std::optional<ChatRequest> chat;
    try {
      const RankLink::Item item = m.link->receive(stop_vote.load());
      if (item.kind == WorkKind::Shutdown) return 0;
      if (item.kind == WorkKind::Heartbeat) continue;
      if (item.kind == WorkKind::Images) image = decode_image_request(item.payload);
      else chat = decode_chat_request(item.payload);
    } catch (const std::exception& e) {  // a collective failed, or the ranks run different builds
      log(std::string("cannot follow rank 0 any more: ") + e.what());
      return 1;
    }
    Job job([](Job&) {});  // the events stay here; rank 0 answers the client
    job.set_agree([&](bool) { return m.link->agree_stop(stop_vote.load()); });
    try {
      if (image) images_here(m, *image, job);
      else chat_here(m, *chat, chat->seed.value_or(0), job);
    } catch (const Cancelled&) {
    } catch (const Error& e) {
      if (is_collective_failure(e)) {
        log(std::string("cannot follow rank 0 any more: ") + e.what());
        return 1;
      }
      log(std::string("the request failed here too: ") + e.what());  // rank 0 answers the client
    } catch (const std::exception& e) {
      log(std::string("the request failed here too: ") + e.what());
    }
  }
}

}  // namespace omniflux::server
