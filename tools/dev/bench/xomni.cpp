// X-Omni bench: the autoregressive phase in image codes/s (batch 1, and batch 2 = the CFG row) and
// the decoder's DiT step (with the feature injection; batch 1 and 3 = both true-CFG scales).
// args: preset=small|x-omni (x-omni: Qwen2.5-7B trunk, 36 layers, 16448 mm vocab, 5184 codes),
// codes=, prompt=, hidden=, layers=, bw_gbs= (device bandwidth, GB/s: reports the floor and the
// ratio to it), dit=0 to skip the decoder step.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <ATen/ATen.h>

#include "../tiny/flux_weights.h"
#include "bench.h"
#include "omniflux/io/config.h"
#include "omniflux/io/weights.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/xomni_lm.h"
#include "sampling/latents.h"

namespace fs = std::filesystem;
using namespace omniflux;
using namespace omniflux::tiny;

namespace {

struct LMShape {
  int64_t hidden = 256, inter = 704, layers = 6, heads = 4, kv = 2, vocab = 4096, mm_vocab = 1088, image_vocab = 1024,
          adap = 1, head = 1;
};

// A temporary X-Omni LM folder with random weights in the compute dtype, removed at exit.
struct TempLM {
  fs::path dir;
  TempLM(const bench::BenchContext& ctx, const LMShape& s) {
    std::random_device rd;
    dir = fs::path(ctx.arg("tmp", fs::temp_directory_path().string())) / ("omniflux-bench-xomni-" + std::to_string(rd()));
    fs::create_directories(dir);
    nlohmann::json c = {{"vocab_size", s.vocab}, {"hidden_size", s.hidden}, {"intermediate_size", s.inter},
                        {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads},
                        {"num_key_value_heads", s.kv}, {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6},
                        {"rope_theta", 1e6}, {"tie_word_embeddings", false}, {"num_mm_adap_layers", s.adap},
                        {"num_mm_head_layers", s.head}, {"mm_vocab_size", s.mm_vocab},
                        {"image_vocab_size", s.image_vocab}};
    std::ofstream(dir / "config.json") << c.dump(2);
    // On CUDA the weights are drawn on the device and served from memory (a full X-Omni LM would
    // take minutes to draw on the CPU and write); on the CPU they go through the file.
    const bool cuda = ctx.rt.torch_device().is_cuda();
    TinyWeights w = cuda ? TinyWeights(0, ctx.rt.compute_dtype(), ctx.rt.torch_device()) : TinyWeights(0, ctx.rt.compute_dtype());
    const int64_t H = s.hidden, hd = H / s.heads;
    w.embedding("model.lm_embed_tokens.weight", s.vocab, H);
    w.embedding("model.mm_embed_tokens.weight", s.mm_vocab, H);
    for (int64_t i = 0; i < s.layers; ++i) {
      const std::string l = "model.layers." + std::to_string(i) + ".";
      w.norm(l + "input_layernorm", H, false);
      w.linear(l + "self_attn.q_proj", H, H);
      w.linear(l + "self_attn.k_proj", s.kv * hd, H);
      w.linear(l + "self_attn.v_proj", s.kv * hd, H);
      w.linear(l + "self_attn.o_proj", H, H, false);
      w.norm(l + "post_attention_layernorm", H, false);
      w.linear(l + "mlp.gate_proj", s.inter, H, false);
      w.linear(l + "mlp.up_proj", s.inter, H, false);
      w.linear(l + "mlp.down_proj", H, s.inter, false);
    }
    w.norm("model.lm_norm", H, false);
    w.norm("model.mm_norm", H, false);
    w.linear("lm_head", s.vocab, H, false);
    w.linear("mm_head", s.mm_vocab, H, false);
    if (cuda) memory = std::make_shared<WeightStore>(Checkpoint::from_tensors(w.tensors(), "random X-Omni LM"), ctx.rt);
    else w.save(dir / "model.safetensors");
  }
  std::shared_ptr<WeightStore> memory;
  XOmniLM load(const bench::BenchContext& ctx) const {
    return memory ? XOmniLM::load(dir.string(), *memory, ctx.rt) : XOmniLM::load(dir.string(), ctx.rt);
  }
  ~TempLM() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// Bytes one image-mode decode step must read: every layer and the image rows of mm_head.
double step_bytes(const LMShape& s, at::ScalarType dt) {
  const double H = s.hidden, I = s.inter, kv = s.kv * (H / s.heads);
  return (s.layers * (H * (H + 2 * kv) + H * H + 3 * H * I) + s.image_vocab * H) * c10::elementSize(dt);
}

}  // namespace

OMNIFLUX_BENCH_CASE(xomni, "X-Omni codes/s (batch 1, batch 2 with CFG) and decoder DiT step ms; args: "
                           "preset=small|x-omni codes= prompt= hidden= layers= bw_gbs= dit=0|1 cfg= (one scale only)") {
  const bool full = ctx.arg("preset", "small") == "x-omni";
  LMShape s;
  if (full) s = {3584, 18944, 36, 28, 4, 152064, 16448, 16384, 4, 4};
  s.hidden = ctx.arg_int("hidden", s.hidden);
  s.layers = ctx.arg_int("layers", s.layers);
  const int64_t n_codes = ctx.arg_int("codes", full ? 5184 : 256);
  const int64_t prompt_len = ctx.arg_int("prompt", 32);
  const double bw = ctx.arg_double("bw_gbs", 0.0);
  {
    TempLM tm(ctx, s);
    auto lm = tm.load(ctx);
    at::Tensor prompt = at::randint(0, s.vocab, {1, prompt_len}, at::kLong);
    at::Tensor neg = prompt.slice(1, prompt_len - 8);
    const double bytes = step_bytes(s, ctx.rt.compute_dtype());
    std::vector<double> scales = {1.0, 3.0};
    if (ctx.args.count("cfg")) scales = {ctx.arg_double("cfg", 1.0)};
    for (double g : scales) {
      XOmniLM::ImageGeneration opt;
      opt.guidance_scale = g;
      const double ms = ctx.time_ms([&] { lm.generate_image_codes(prompt, neg, n_codes, opt); });
      const double per_s = n_codes / (ms * 1e-3);
      std::ostringstream shape;
      shape << "hidden=" << s.hidden << " layers=" << s.layers << " image_vocab=" << s.image_vocab
            << " batch=" << (g == 1.0 ? 1 : 2) << " prompt=" << prompt_len << " codes=" << n_codes;
      nlohmann::json line = {{"shape", shape.str()}, {"metric", g == 1.0 ? "codes_b1" : "codes_b2_cfg"},
                             {"value", per_s}, {"unit", "codes/s"}, {"total_s", ms * 1e-3},
                             {"bytes_per_step", bytes}};
      if (bw > 0) {
        const double floor_s = n_codes * bytes / (bw * 1e9);
        line["floor_s"] = floor_s;
        line["ratio_to_floor"] = ms * 1e-3 / floor_s;
      }
      ctx.report(line);
    }
  }
  if (ctx.arg_int("dit", 1) == 0) return;
  // Decoder step: a small DiT (or FLUX.1-dev size) with the SigLIP injection term.
  FluxDitShape d = full ? flux_dev_dit() : FluxDitShape{4, 32, 2, 4, 128, 64, 64, {4, 14, 14}};
  const int64_t side = ctx.arg_int("side", full ? 1152 : 256), txt = full ? 512 : 64;
  const fs::path dir = fs::path(ctx.arg("tmp", fs::temp_directory_path().string())) /
                       ("omniflux-bench-xomni-dit-" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << flux_dit_config(d).dump(2);
  std::optional<FluxTransformer> loaded;
  if (ctx.rt.torch_device().is_cuda()) {  // drawn on the device, served from memory
    TinyWeights w(0, ctx.rt.compute_dtype(), ctx.rt.torch_device());
    flux_dit_weights(w, d);
    WeightStore store(Checkpoint::from_tensors(w.tensors(), "random FLUX DiT"), ctx.rt);
    loaded.emplace(FluxDiTConfig::from_config(Config::load(dir.string())), store.root());
    store.finish();
  } else {
    TinyWeights w(0, ctx.rt.compute_dtype());
    flux_dit_weights(w, d);
    w.save(dir / "diffusion_pytorch_model.safetensors");
    loaded.emplace(FluxTransformer::load(dir.string(), ctx.rt));
  }
  const FluxTransformer& model = *loaded;
  const auto dev = ctx.rt.torch_device();
  const auto dt = ctx.rt.compute_dtype();
  const int64_t lat = flux_latent_size(side), n = (lat / 2) * (lat / 2), inner = d.heads * d.head_dim;
  for (int64_t b : {1, 3}) {
    FluxDiTInputs in;
    in.hidden_states = at::randn({b, n, d.in}).to(dev, dt);
    in.encoder_hidden_states = at::randn({b, txt, d.joint}).to(dev, dt);
    in.pooled_projections = at::randn({b, d.pooled}).to(dev, dt);
    in.timestep = at::full({b}, 0.5).to(dev, dt);
    in.guidance = at::full({b}, 1.0).to(dev);
    in.img_ids = latent_image_ids(lat, lat).to(dev);
    in.txt_ids = text_ids(txt).to(dev);
    in.image_embeds_add = at::randn({b, n, inner}).to(dev, dt);
    const double ms = ctx.time_ms([&] { model.forward(in); });
    std::ostringstream shape;
    shape << "D=" << inner << " blocks=" << d.layers << "+" << d.single << " " << side << "x" << side << " N=" << n
          << " T=" << txt << " batch=" << b;
    ctx.report({{"shape", shape.str()}, {"metric", b == 1 ? "decoder_step" : "decoder_step_two_scale_cfg"},
                {"value", ms}, {"unit", "ms"}});
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}
