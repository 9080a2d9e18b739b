// Offload and quantised weights. The offload modes (none, model, sequential) give bit-identical
// outputs on the tiny pipelines in fp32 on the CPU. Folders written by quantize_folder (fp8, int8,
// bf16) load through the normal loaders and stay within a tolerance measured on the reference
// fixtures and the tiny pipelines. Broken quantised folders and pickles are refused by name. X-Omni's
// vision weights load from PyTorch pickles exactly as from safetensors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/quantize.h"
#include "omniflux/io/safetensors.h"
#include "io/torch_pickle.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/qwen2.h"
#include "nn/block_stack.h"
#include "nn/debug.h"
#include "nn/layers.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"
#include "omniflux/plan.h"
#include "sampling/latents.h"
#include "omniflux/sampling/token_sampling.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace omniflux;

namespace {

const fs::path& tiny_root() { return tiny_folders(7, {"flux_1_dev", "uniworld_v1", "siglip2", "x_omni"}); }
std::string tiny(const std::string& name) { return (tiny_root() / name).string(); }

RuntimeOptions with(Offload o) {
  RuntimeOptions rt;
  rt.offload = o;
  return rt;
}
const Offload kModes[] = {Offload::None, Offload::Model, Offload::Sequential};

UniWorldOptions uniworld_request(std::vector<Image> refs, UniWorldTask task) {
  UniWorldOptions o;
  o.prompt = refs.empty() ? "a red cube" : "Make it snow";
  o.images = std::move(refs);
  o.width = o.height = 64;
  o.steps = 2;
  o.task = task;
  o.max_new_tokens = 6;
  return o;
}

XOmniOptions xomni_request() {
  XOmniOptions o;
  o.prompt = "a lighthouse";
  o.width = 64;
  o.height = 48;
  o.cfg_scale = 2.0;  // both LM rows
  o.seed = o.decoder.seed = 3;
  o.decoder.steps = 2;
  return o;
}

// The error of `got` against the fp32 `ref`.
struct Deviation {
  double max_abs = 0, rel_l2 = 0, cosine = 1;
};
Deviation deviation(const at::Tensor& got, const at::Tensor& ref) {
  const at::Tensor g = got.to(at::kDouble).flatten(), r = ref.to(at::kDouble).flatten();
  Deviation d;
  d.max_abs = (g - r).abs().max().item<double>();
  d.rel_l2 = ((g - r).norm() / r.norm()).item<double>();
  d.cosine = (at::dot(g, r) / (g.norm() * r.norm())).item<double>();
  return d;
}
at::Tensor pixels(const Image& im) {
  return at::from_blob(const_cast<uint8_t*>(im.rgb.data()), {static_cast<int64_t>(im.rgb.size())}, at::kByte).clone();
}
void report(const std::string& what, const Deviation& d) {
  std::printf("[quant] %-34s max_abs %.4g  rel_l2 %.4g  cosine %.6f\n", what.c_str(), d.max_abs, d.rel_l2, d.cosine);
}

// A quantised copy of `src` (cached per source and format for the whole test run).
std::string quantized(const std::string& src, WeightFormat f) {
  static TempDir root;
  static std::map<std::string, std::string> done;
  const std::string key = src + "|" + weight_format_name(f);
  if (auto it = done.find(key); it != done.end()) return it->second;
  const std::string dst = (root.path() / (std::to_string(done.size()) + "-" + weight_format_name(f))).string();
  QuantizeOptions opt;
  opt.format = f;
  quantize_folder(src, dst, opt);
  return done[key] = dst;
}

// Tolerances of a quantised model's outputs against fp32: a bound on the relative L2 error and a
// floor on the cosine. Each is twice the worst value measured on the reference fixtures and the tiny
// pipelines (the "[quant]" lines these tests print), rounded up:
//   models (flux_transformer output, qwen2_lm logits), worst rel_l2 / 1 - cosine:
//     fp8 0.042 / 8.6e-4, int8 0.010 / 5.2e-5, bf16 0.0028 / 4e-6
//   pipelines (uint8 pixels of a 2-step UniWorld edit and X-Omni decode at 64x48):
//     fp8 0.0054 / 1.5e-5, int8 0.0022 / 2e-6, bf16 0.0011 / 1e-6
// The sizes follow from the formats: e4m3 keeps 3 mantissa bits (relative rounding up to 2^-4 per
// weight), int8 per-channel rounds to 1/254 of a row's range, bf16 to 2^-9; a layer's output error
// is about its weights' RMS relative error, and a few layers add a small factor. Pixels move less
// than logits: the VAE and the uint8 rounding absorb much of the DiT's error at two steps.
struct Bound {
  double rel_l2, cosine;
};
Bound model_bound(WeightFormat f) {
  switch (f) {
    case WeightFormat::Fp8: return {0.09, 0.998};
    case WeightFormat::Int8: return {0.025, 0.9999};
    case WeightFormat::Bf16: return {0.006, 0.99999};
  }
  return {};
}
Bound pipeline_bound(WeightFormat f) {
  switch (f) {
    case WeightFormat::Fp8: return {0.012, 0.99996};
    case WeightFormat::Int8: return {0.005, 0.99999};
    case WeightFormat::Bf16: return {0.003, 0.999997};
  }
  return {};
}
void expect_within(const std::string& what, const Deviation& d, const Bound& b) {
  report(what, d);
  EXPECT_LE(d.rel_l2, b.rel_l2) << what;
  EXPECT_GE(d.cosine, b.cosine) << what;
}

const WeightFormat kFormats[] = {WeightFormat::Fp8, WeightFormat::Int8, WeightFormat::Bf16};

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}
void write_json(const fs::path& p, const nlohmann::json& j) {
  fs::remove(p);
  std::ofstream(p) << j.dump(2);
}

// A copy of a folder (regular files; symlinks followed).
fs::path copy_folder(const std::string& src, const fs::path& dst) {
  fs::copy(src, dst, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  return dst;
}

// Every tensor of a safetensors file.
std::map<std::string, at::Tensor> read_all(const fs::path& file) {
  const Checkpoint c = Checkpoint::open(file.string());
  std::map<std::string, at::Tensor> out;
  for (const auto& n : c.names()) out[n] = c.get(n).clone();
  return out;
}
void write_all(const fs::path& file, const std::map<std::string, at::Tensor>& tensors) {
  fs::remove(file);
  save_safetensors(file.string(), tensors);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// ---- offload modes --------------------------------------------------------------------------------

// What each mode keeps built while the stages run, seen through the residency group at every
// progress call: equal outputs alone would not notice a mode that released nothing (or too much).
TEST(Offload, ModesKeepBuiltOnlyWhatTheStageNeeds) {
  using Set = std::set<std::string>;
  const std::string dir = tiny("flux.1-dev"), tdir = dir + "/transformer";
  const Set all = {"text_encoder", "text_encoder_2", "transformer", "vae"};
  for (Offload mode : kModes) {
    const RuntimeOptions rt = with(mode);
    auto group = std::make_shared<ResidencyGroup>(mode);
    const FluxPipeline p = FluxPipeline::load(dir, [tdir, rt] { return FluxTransformer::load(tdir, rt); }, rt, group);
    const auto built = [&] {
      const auto r = group->resident();
      return Set(r.begin(), r.end());
    };
    const Set after_load = built();
    std::map<std::string, Set> during;  // stage -> what was built at each of its progress calls
    FluxOptions o;
    o.prompt = "a red cube";
    o.width = o.height = 64;
    o.steps = 2;
    const auto img = p.generate(o, [&](const std::string& stage, int64_t step, int64_t) {
      if (stage != "denoise" || step > 0) {  // step 0 comes before the transformer runs
        const Set now = built();
        EXPECT_TRUE(!during.count(stage) || during[stage] == now) << stage << " changed within the stage";
        during[stage] = now;
      }
      return true;
    });
    ASSERT_TRUE(img);
    const Set after = built();
    const std::string m = offload_name(mode);
    switch (mode) {
      case Offload::None:  // everything built at load and kept
        EXPECT_EQ(after_load, all) << m;
        EXPECT_EQ(during["encode_prompt"], all) << m;
        EXPECT_EQ(during["denoise"], all) << m;
        EXPECT_EQ(after, all) << m;
        break;
      case Offload::Model:  // one component at a time: the one the stage runs
        EXPECT_EQ(after_load, Set{}) << m;
        EXPECT_EQ(during["encode_prompt"], Set{"text_encoder_2"}) << m;  // CLIP ran first, then T5
        EXPECT_EQ(during["denoise"], Set{"transformer"}) << m;
        EXPECT_EQ(during["decode"], Set{"vae"}) << m;
        break;
      case Offload::Sequential:  // as model, but the transformer streams its own blocks and stays
        EXPECT_EQ(after_load, Set{"transformer"}) << m;
        EXPECT_EQ(during["encode_prompt"], (Set{"text_encoder_2", "transformer"})) << m;
        EXPECT_EQ(during["denoise"], Set{"transformer"}) << m;
        EXPECT_EQ(during["decode"], (Set{"transformer", "vae"})) << m;
        break;
    }
  }
}

TEST(Offload, ModesGiveBitIdenticalUniWorldOutputs) {
  std::optional<Image> edit0, t2i0;
  std::string text0;
  for (Offload mode : kModes) {
    SCOPED_TRACE(offload_name(mode));
    const auto p = UniWorldPipeline::load(tiny("uniworld-v1"), tiny("flux.1-dev"), tiny("siglip2"), with(mode));
    auto edit = p.run(uniworld_request({gradient_image(40, 32, 1)}, UniWorldTask::Image));
    auto t2i = p.run(uniworld_request({}, UniWorldTask::Image));
    auto text = p.run(uniworld_request({gradient_image(32, 32, 2)}, UniWorldTask::Text));
    ASSERT_TRUE(edit && t2i && text);
    ASSERT_TRUE(std::holds_alternative<Image>(*edit) && std::holds_alternative<Image>(*t2i) && !std::holds_alternative<Image>(*text));
    if (mode == Offload::None) {
      edit0 = std::get<Image>(*edit);
      t2i0 = std::get<Image>(*t2i);
      text0 = std::get<std::string>(*text);
      continue;
    }
    EXPECT_EQ(std::get<Image>(*edit).rgb, edit0->rgb);
    EXPECT_EQ(std::get<Image>(*t2i).rgb, t2i0->rgb);
    EXPECT_EQ(std::get<std::string>(*text), text0);
  }
}

TEST(Offload, ModesGiveBitIdenticalXOmniOutputs) {
  std::optional<XOmniCodes> codes0;
  std::optional<Image> image0;
  std::string chat0;
  for (Offload mode : kModes) {
    SCOPED_TRACE(offload_name(mode));
    const auto p = XOmniPipeline::load(tiny("x-omni"), tiny("flux.1-dev"), with(mode));
    auto codes = p.generate_codes(xomni_request());
    ASSERT_TRUE(codes);
    auto image = p.decode_codes(*codes, xomni_request().decoder);
    ASSERT_TRUE(image);
    auto chat = p.chat(gradient_image(48, 48, 3), "What is this?", {}, 6);
    ASSERT_TRUE(chat);
    if (mode == Offload::None) {
      codes0 = codes;
      image0 = image;
      chat0 = *chat;
      continue;
    }
    EXPECT_EQ(codes->codes, codes0->codes);
    EXPECT_EQ(image->rgb, image0->rgb);
    EXPECT_EQ(*chat, chat0);
  }
}

// A small FLUX request: 64x64, two steps.
FluxOptions small_flux_request() {
  FluxOptions o;
  o.prompt = "a cat";
  o.width = o.height = 64;
  o.steps = 2;
  o.seed = 9;
  return o;
}

TEST(Offload, ModesGiveBitIdenticalFluxImages) {
  const FluxOptions o = small_flux_request();
  std::optional<Image> ref;
  for (Offload mode : kModes) {
    SCOPED_TRACE(offload_name(mode));
    auto img = FluxPipeline::load(tiny("flux.1-dev"), with(mode)).generate(o);
    ASSERT_TRUE(img);
    if (!ref) ref = img;
    else EXPECT_EQ(img->rgb, ref->rgb);
  }
}

// A stand-in for the CUDA side stream that holds each copy until the compute side waits for its
// slot: a block read before its wait, or a slot refilled before the block in it was waited for,
// shows up here instead of as a race on a GPU.
class HeldCopies : public nn::detail::CopyStream {
 public:
  void copy(int slot, std::function<void()> work) override {
    ASSERT_TRUE(slot == 0 || slot == 1) << slot;
    EXPECT_FALSE(pending_[slot]) << "slot " << slot << " refilled before its last copy was waited for";
    pending_[slot] = std::move(work);
    ++copies;
    if (recording) log += 'c';
  }
  void wait(int slot) override {
    ASSERT_TRUE(pending_[slot]) << "wait on slot " << slot << " with no copy queued";
    std::function<void()> work = std::move(pending_[slot]);
    pending_[slot] = nullptr;
    work();
    ++waits;
    if (recording) log += 'w';
  }
  int copies = 0, waits = 0;
  bool recording = false;
  std::string log;  // c: a copy queued, w: a wait, B: a block computed (added by the test)

 private:
  std::function<void()> pending_[2];
};

// The CUDA streaming path of sequential offload (host arenas, two device slots, the next block
// copied while one computes) on the CPU, through the fake copy stream.
TEST(Offload, StreamingPathWithAFakeCopyStreamEqualsResident) {
  const FluxOptions o = small_flux_request();
  const auto ref = FluxPipeline::load(tiny("flux.1-dev"), with(Offload::None)).generate(o);
  auto fake = std::make_shared<HeldCopies>();
  nn::detail::set_fake_copy_stream(fake);
  struct Uninstall {
    ~Uninstall() { nn::detail::set_fake_copy_stream(nullptr); }
  } uninstall;
  const FluxPipeline p = FluxPipeline::load(tiny("flux.1-dev"), with(Offload::Sequential));
  nn::detail::set_fake_copy_stream(nullptr);  // the stacks keep theirs
  DebugScope blocks([&](const std::string& name, const at::Tensor&) {
    if (fake->recording && (name == "flux.double_block.img" || name == "flux.single_block")) fake->log += 'B';
  });
  const auto img = p.generate(o, [&](const std::string& stage, int64_t, int64_t) {
    fake->recording = stage == "denoise";  // the DiT's two stacks alone
    return true;
  });
  ASSERT_TRUE(ref && img);
  EXPECT_EQ(img->rgb, ref->rgb);
  EXPECT_EQ(fake->waits, fake->copies);
  // Each stack run: one copy and one wait per block (the tiny DiT has one block in each stack, so
  // the overlap is checked on a longer stack below). Two stacks per step.
  const FluxDiTConfig& c = p.transformer_config();
  EXPECT_EQ(fake->copies, o.steps * (c.num_layers + c.num_single_layers)) << fake->log;
}

// A stack of four blocks of one [3] weight each, streamed through the fake copy stream: every block
// computes on its own weights, from the two slots in turn, and block i+1's copy is queued before
// block i computes (the overlap of copy and compute on a GPU).
struct ToyBlock {
  at::Tensor w;
  template <class F>
  void for_each_tensor(F&& f) {
    f(w);
  }
};
TEST(Offload, StreamedStackQueuesTheNextCopyBeforeComputing) {
  TempDir dir;
  std::map<std::string, at::Tensor> weights;
  for (int i = 0; i < 4; ++i) weights["blocks." + std::to_string(i) + ".w"] = at::full({3}, float(i + 1));
  save_safetensors((dir.path() / "toy.safetensors").string(), weights);
  const RuntimeOptions rt = with(Offload::Sequential);
  auto store = WeightStore::open((dir.path() / "toy.safetensors").string(), rt);
  auto build = [](const WeightView& v) { return ToyBlock{v.get("w", {3})}; };
  auto fake = std::make_shared<HeldCopies>();
  nn::detail::set_fake_copy_stream(fake);
  struct Uninstall {
    ~Uninstall() { nn::detail::set_fake_copy_stream(nullptr); }
  } uninstall;
  const auto stack = nn::BlockStack<ToyBlock>::load(store->root().sub("blocks"), 4, build, rt);
  fake->recording = true;
  std::vector<float> seen;
  std::set<const void*> slots;
  stack.run([&](const ToyBlock& b, int64_t i) {
    fake->log += 'B';
    seen.push_back(b.w[0].item<float>());
    slots.insert(b.w.data_ptr());
  });
  EXPECT_EQ(seen, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(slots.size(), static_cast<size_t>(nn::kStreamedBlocksOnDevice));  // two slots, in turn
  EXPECT_EQ(fake->log, "cwcBwcBwcBwB");
  // Without a fake (and without CUDA) the same stack builds each block from the file as it runs.
  nn::detail::set_fake_copy_stream(nullptr);
  seen.clear();
  nn::BlockStack<ToyBlock>::load(store->root().sub("blocks"), 4, build, rt).run([&](const ToyBlock& b, int64_t) {
    seen.push_back(b.w[0].item<float>());
  });
  EXPECT_EQ(seen, (std::vector<float>{1, 2, 3, 4}));
}

TEST(Offload, QuantisedFoldersAreBitIdenticalAcrossModesToo) {
  const std::string q = quantized(tiny("uniworld-v1"), WeightFormat::Fp8);
  std::optional<Image> ref;
  for (Offload mode : kModes) {
    SCOPED_TRACE(offload_name(mode));
    auto r = UniWorldPipeline::load(q, tiny("flux.1-dev"), tiny("siglip2"), with(mode))
                 .run(uniworld_request({gradient_image(40, 32, 1)}, UniWorldTask::Image));
    ASSERT_TRUE(r && std::holds_alternative<Image>(*r));
    if (!ref) ref = std::get<Image>(*r);
    else EXPECT_EQ(std::get<Image>(*r).rgb, ref->rgb);
  }
}

// ---- quantisation error against fp32 ------------------------------------------------------------

TEST(Quantize, TinyDiTStaysWithinTolerance) {
  const fs::path fx = fixture("flux_transformer");
  const Checkpoint io = Checkpoint::open((fx / "io.safetensors").string());
  FluxDiTInputs in;
  in.hidden_states = pack_latents(io.get("latents_unpacked"));
  in.encoder_hidden_states = io.get("encoder_hidden_states");
  in.pooled_projections = io.get("pooled_projections");
  in.timestep = io.get("timestep");
  in.guidance = io.get("guidance");
  in.img_ids = io.get("img_ids");
  in.txt_ids = io.get("txt_ids");
  const at::Tensor ref = io.get("output");
  // fp32 itself reproduces the reference (the parity case's tolerance).
  EXPECT_LT(deviation(FluxTransformer::load(fx.string()).forward(in), ref).max_abs, 1e-3);
  for (WeightFormat f : kFormats) {
    const at::Tensor got = FluxTransformer::load(quantized(fx.string(), f)).forward(in);
    expect_within(std::string("flux_transformer ") + weight_format_name(f), deviation(got, ref), model_bound(f));
  }
}

TEST(Quantize, LMsStayWithinToleranceAndMostlyKeepGreedyTokens) {
  const fs::path fx = fixture("qwen2_lm");
  const Checkpoint io = Checkpoint::open((fx / "io.safetensors").string());
  const at::Tensor ids = io.get("input_ids");
  const at::Tensor ref_ids = io.get("generated_ids");
  for (WeightFormat f : kFormats) {
    auto lm = Qwen2ForCausalLM::load(quantized(fx.string(), f));
    expect_within(std::string("qwen2_lm logits ") + weight_format_name(f), deviation(lm.forward(ids), io.get("logits")),
                  model_bound(f));
    auto cache = lm.new_cache(1, ids.size(1) + ref_ids.size(1));
    at::Tensor first = lm.prefill(ids, cache).squeeze(1);
    sampling::TokenLoopOptions g;
    g.max_new_tokens = ref_ids.size(1);
    auto r = sampling::generate(first, [&](const at::Tensor& next) { return lm.decode_one(next, cache); }, g);
    const double agree = r.tokens.cpu().eq(ref_ids).to(at::kDouble).mean().item<double>();
    std::printf("[quant] %-34s greedy-token agreement %.3f (%lld tokens)\n",
                (std::string("qwen2_lm ") + weight_format_name(f)).c_str(), agree,
                static_cast<long long>(ref_ids.size(1)));
    // Measured 1.0 for every format; a greedy path may fork at a near-tie, so allow one token.
    EXPECT_GE(agree, 1.0 - 1.0 / static_cast<double>(ref_ids.size(1)) - 1e-9) << weight_format_name(f);
  }
}

TEST(Quantize, PipelinesStayWithinTolerance) {
  const UniWorldOptions edit = uniworld_request({gradient_image(40, 32, 1)}, UniWorldTask::Image);
  const auto ref_uw = UniWorldPipeline::load(tiny("uniworld-v1"), tiny("flux.1-dev"), tiny("siglip2")).run(edit);
  const auto ref_xo = XOmniPipeline::load(tiny("x-omni"), tiny("flux.1-dev")).generate(xomni_request());
  ASSERT_TRUE(ref_uw && ref_xo);
  for (WeightFormat f : kFormats) {
    const std::string flux = quantized(tiny("flux.1-dev"), f);
    auto uw = UniWorldPipeline::load(quantized(tiny("uniworld-v1"), f), flux, tiny("siglip2")).run(edit);
    ASSERT_TRUE(uw && std::holds_alternative<Image>(*uw));
    expect_within(std::string("uniworld edit pixels ") + weight_format_name(f), deviation(pixels(std::get<Image>(*uw)), pixels(std::get<Image>(*ref_uw))),
                  pipeline_bound(f));
    // X-Omni: the decoder image from the fp32 LM's codes, so the comparison isolates the weights of
    // the decoder path (sampled codes of a quantised LM may differ by a near-tie and then diverge).
    const auto xp = XOmniPipeline::load(quantized(tiny("x-omni"), f), flux);
    const auto ref_pipe = XOmniPipeline::load(tiny("x-omni"), tiny("flux.1-dev"));
    auto codes = ref_pipe.generate_codes(xomni_request());
    ASSERT_TRUE(codes);
    auto img = xp.decode_codes(*codes, xomni_request().decoder);
    ASSERT_TRUE(img);
    expect_within(std::string("xomni decode pixels ") + weight_format_name(f), deviation(pixels(*img), pixels(*ref_xo)),
                  pipeline_bound(f));
  }
}

// ---- bad quantised folders ----------------------------------------------------------------------

TEST(Quantize, BrokenQuantisedFoldersAreRefusedByName) {
  const std::string q = quantized(fixture("flux_transformer"), WeightFormat::Fp8);
  const std::string scale = "transformer_blocks.0.attn.to_q.weight_scale";
  {  // a missing scale
    TempDir d;
    const fs::path f = copy_folder(q, d.path() / "m");
    auto t = read_all(f / "diffusion_pytorch_model.safetensors");
    ASSERT_TRUE(t.count(scale));
    t.erase(scale);
    write_all(f / "diffusion_pytorch_model.safetensors", t);
    const std::string e = error_of([&] { FluxTransformer::load(f.string()); });
    EXPECT_TRUE(has(e, "transformer_blocks.0.attn.to_q.weight")) << e;
    EXPECT_TRUE(has(e, "scale")) << e;
  }
  {  // a scale of the wrong shape
    TempDir d;
    const fs::path f = copy_folder(q, d.path() / "m");
    auto t = read_all(f / "diffusion_pytorch_model.safetensors");
    t[scale] = at::ones({t[scale].size(0) + 1, 1});
    write_all(f / "diffusion_pytorch_model.safetensors", t);
    const std::string e = error_of([&] { FluxTransformer::load(f.string()); });
    EXPECT_TRUE(has(e, scale)) << e;
    EXPECT_TRUE(has(e, "shape")) << e;
  }
  {  // a zero scale
    TempDir d;
    const fs::path f = copy_folder(q, d.path() / "m");
    auto t = read_all(f / "diffusion_pytorch_model.safetensors");
    t[scale].zero_();
    write_all(f / "diffusion_pytorch_model.safetensors", t);
    EXPECT_TRUE(has(error_of([&] { FluxTransformer::load(f.string()); }), scale));
  }
  {  // an unknown quantisation method
    TempDir d;
    const fs::path f = copy_folder(q, d.path() / "m");
    auto cfg = read_json(f / "config.json");
    cfg["quantization_config"]["quant_method"] = "awq";
    write_json(f / "config.json", cfg);
    const std::string e = error_of([&] { FluxTransformer::load(f.string()); });
    EXPECT_TRUE(has(e, "quantisation method")) << e;
    EXPECT_TRUE(has(e, "awq")) << e;
  }
  {  // fp8 codes without any quantization_config
    TempDir d;
    const fs::path f = copy_folder(q, d.path() / "m");
    auto cfg = read_json(f / "config.json");
    cfg.erase("quantization_config");
    write_json(f / "config.json", cfg);
    const std::string e = error_of([&] { FluxTransformer::load(f.string()); });
    EXPECT_TRUE(has(e, "quantization_config")) << e;
  }
  {  // quantising a quantised folder
    TempDir d;
    QuantizeOptions opt;
    EXPECT_TRUE(has(error_of([&] { quantize_folder(q, (d.path() / "again").string(), opt); }), "quantis"));
    EXPECT_FALSE(fs::exists(d.path() / "again"));
  }
}

// ---- PyTorch pickles ----------------------------------------------------------------------------

// X-Omni ships its SigLIP-VQ ViT and projector as torch.save files: the same folder with .pt / .bin
// files in place of the safetensors ones tokenizes, chats and generates exactly the same.
TEST(Pickles, XOmniVisionWeightsLoadFromPicklesWithoutConversion) {
  TempDir d;
  const fs::path f = copy_folder(tiny("x-omni"), d.path() / "x-omni");
  auto cfg = read_json(f / "config.json");
  auto& enc = cfg["vision_config"]["encoder"];
  const std::map<std::string, std::string> renames = {{"siglip_path", ".pt"}, {"projector_path", ".bin"}};
  for (const auto& [field, ext] : renames) {
    const fs::path st = f / enc[field].get<std::string>();
    const fs::path pk = fs::path(st).replace_extension(ext);
    save_torch_state_dict(pk.string(), read_all(st));
    fs::remove(st);
    enc[field] = pk.filename().string();
  }
  write_json(f / "config.json", cfg);

  const auto a = XOmniPipeline::load(tiny("x-omni"), tiny("flux.1-dev"));
  const auto b = XOmniPipeline::load(f.string(), tiny("flux.1-dev"));
  const Image im = gradient_image(48, 32, 4);
  EXPECT_EQ(a.tokenize_image(im).codes, b.tokenize_image(im).codes);
  EXPECT_EQ(*a.chat(im, "What is this?", {}, 4), *b.chat(im, "What is this?", {}, 4));
  auto codes = a.generate_codes(xomni_request());
  ASSERT_TRUE(codes);
  EXPECT_EQ(a.decode_codes(*codes, xomni_request().decoder)->rgb, b.decode_codes(*codes, xomni_request().decoder)->rgb);

  // omniflux-quantize takes the pickles as input and writes safetensors.
  const std::string q = (d.path() / "q").string();
  QuantizeOptions opt;
  opt.format = WeightFormat::Bf16;
  quantize_folder(f.string(), q, opt);
  const auto qcfg = read_json(fs::path(q) / "config.json");
  for (const auto& [field, ext] : renames) {
    const std::string name = qcfg["vision_config"]["encoder"][field].get<std::string>();
    EXPECT_EQ(fs::path(name).extension(), ".safetensors") << field;
    EXPECT_TRUE(fs::exists(fs::path(q) / name)) << name;
  }
  EXPECT_TRUE(XOmniPipeline::load(q, tiny("flux.1-dev")).chat(im, "What is this?", {}, 2).has_value());
}

// pytorch_model.bin (and its index) in a folder load as model.safetensors does; a pickle that is
// not a state dict is refused with a message naming the file.
TEST(Pickles, PytorchModelBinLoadsLikeSafetensorsAndBadOnesAreRefused) {
  const fs::path fx = fixture("qwen2_lm");
  TempDir d;
  const fs::path f = copy_folder(fx.string(), d.path() / "lm");
  fs::remove(f / "io.safetensors");
  save_torch_state_dict((f / "pytorch_model.bin").string(), read_all(f / "model.safetensors"));
  fs::remove(f / "model.safetensors");
  const at::Tensor ids = Checkpoint::open((fx / "io.safetensors").string()).get("input_ids");
  EXPECT_TRUE(at::equal(Qwen2ForCausalLM::load(f.string()).forward(ids),
                        Qwen2ForCausalLM::load(fx.string()).forward(ids)));

  // A torch.save zip whose pickle is a list, not a dict.
  write_bytes(f / "pytorch_model.bin", make_zip({{"a/data.pkl", std::string("\x80\x02]q\x00.", 6)}}));
  std::string e = error_of([&] { Qwen2ForCausalLM::load(f.string()); });
  EXPECT_TRUE(has(e, "pytorch_model.bin")) << e;
  EXPECT_TRUE(has(e, "dict")) << e;
  // Not a zip at all.
  write_bytes(f / "pytorch_model.bin", "not a pickle");
  e = error_of([&] { Qwen2ForCausalLM::load(f.string()); });
  EXPECT_TRUE(has(e, "pytorch_model.bin")) << e;
}

// ---- dry runs -----------------------------------------------------------------------------------

// The estimate's arithmetic on hand-made figures: none holds everything, model the largest
// component, sequential the streamed component's non-block weights and two blocks.
TEST(DryRun, OffloadEstimateFollowsTheModes) {
  auto comp = [](const std::string& name, int64_t bf16, int64_t act, int64_t blocks, int64_t block_bytes) {
    plan::ComponentPlan c;
    c.name = name;
    c.weights.bytes_bf16 = bf16;
    c.weights.bytes_fp8 = bf16 / 2;
    c.largest_activation.bytes = act;
    if (blocks) c.weights.blocks.push_back({"transformer_blocks", blocks, 0, block_bytes, block_bytes / 2});
    return c;
  };
  const std::vector<plan::ComponentPlan> plans = {comp("t5_encoder", 1000, 10, 0, 0),
                                                  comp("flux_dit", 4000, 50, 10, 350)};
  const plan::OffloadEstimate e = plan::estimate_offload(plans, "bf16", 7);
  EXPECT_EQ(e.peak_none, 5000 + 100 + 7);
  EXPECT_EQ(e.peak_model, 4000 + 100 + 7);
  EXPECT_EQ(e.peak_model_at, "flux_dit");
  // The DiT streamed: 500 outside its blocks + 2 blocks of 350 + activations 100 (T5: 1020).
  EXPECT_EQ(e.peak_sequential, 500 + 700 + 100 + 7);
  EXPECT_EQ(e.peak_sequential_at, "flux_dit");
  EXPECT_EQ(plan::estimate_offload(plans, "fp32", 0).peak_model, 8000 + 200);
  EXPECT_EQ(plan::estimate_offload(plans, "fp8", 0).peak_model, 2000 + 100);
  EXPECT_THROW(plan::estimate_offload(plans, "nf4"), Error);
}

// Under tensor parallelism a rank holds 1/P of each of the LM's blocks and the rest whole.
TEST(DryRun, TensorParallelRanksHoldTheirShareOfTheBlocks) {
  plan::ComponentPlan lm;
  lm.name = "xomni_lm";
  lm.weights.bytes_bf16 = 4000;  // 10 blocks of 350, 500 outside them
  lm.weights.bytes_fp8 = 2000;
  lm.weights.blocks.push_back({"model.layers", 10, 0, 350, 175});
  lm.largest_activation.bytes = 50;
  lm.kv_cache_bytes = 20;
  lm.tensor_parallel = 4;
  const plan::OffloadEstimate e = plan::estimate_offload({lm}, "bf16", 0);
  EXPECT_EQ(e.components[0].weight_bytes, 500 + 10 * 88);  // ceil(350 / 4) per block
  EXPECT_EQ(e.peak_none, 500 + 880 + 100 + 20);
  EXPECT_EQ(e.peak_sequential, 500 + 2 * 88 + 100 + 20);
  lm.tensor_parallel = 1;
  EXPECT_EQ(plan::estimate_offload({lm}, "bf16", 0).components[0].weight_bytes, 4000);
}

// --dry-run prints the plan of the request per offload mode and loads nothing.
TEST(DryRun, PipelineClisPlanTheRequestWithoutLoading) {
  TempDir d;
  const std::string img = (d.path() / "ref.png").string(), png = (d.path() / "never.png").string();
  save_png(img, gradient_image(40, 32, 1));
  const std::vector<std::vector<std::string>> runs = {
      {bin("omniflux-uniworld"), "-m", tiny("uniworld-v1"), "--flux", tiny("flux.1-dev"), "--siglip", tiny("siglip2"),
       "-p", "Make it snow", "-i", img, "-W", "64", "-H", "64", "-o", png, "--dry-run", "--max-vram", "24"},
      {bin("omniflux-xomni"), "generate", "-m", tiny("x-omni"), "--flux", tiny("flux.1-dev"), "-p", "a cat", "-W",
       "64", "-H", "48", "--cfg", "2", "-o", png, "--dry-run", "--max-vram", "24"},
      {bin("omniflux-flux"), "-m", tiny("flux.1-dev"), "-p", "a cat", "-W", "64", "-H", "64", "-o", png, "--dry-run"}};
  for (const auto& args : runs) {
    Child c(args);
    ASSERT_TRUE(c.started());
    const int st = c.wait();
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << args[0] << "\n" << c.err();
    for (const char* want : {"none", "model", "sequential", "bf16", "fp8", "working"})
      EXPECT_TRUE(has(c.out(), want)) << args[0] << " lacks " << want << "\n" << c.out();
    EXPECT_FALSE(has(c.out(), "FAILED")) << c.out();
    EXPECT_EQ(has(c.out(), "fits --max-vram 24 GiB"), args.back() == "24") << c.out();
    EXPECT_FALSE(fs::exists(png)) << "a dry run wrote its output";
  }
}

// A dry run reads the folders' configs and headers: garbage there is an error that names the file,
// not a crash and not a plan.
TEST(DryRun, BrokenFoldersAreRefusedByName) {
  TempDir d;
  const fs::path flux = copy_folder(tiny("flux.1-dev"), d.path() / "flux");
  std::ofstream(flux / "transformer" / "config.json") << "{ not json";
  Child c({bin("omniflux-flux"), "-m", flux.string(), "-p", "a cat", "-W", "64", "-H", "64", "--dry-run"});
  int st = c.wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << c.err();
  EXPECT_TRUE(has(c.err(), "transformer") && has(c.err(), "config.json")) << c.err();
  fs::create_directories(d.path() / "empty");
  Child e({bin("omniflux-xomni"), "generate", "-m", (d.path() / "empty").string(), "--flux", tiny("flux.1-dev"), "-p",
           "a cat", "-W", "64", "-H", "48", "--dry-run"});
  st = e.wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << e.err();
  EXPECT_TRUE(has(e.err(), "config.json")) << e.err();
}

// quantize_folder's refusals: a missing source, an existing destination, an unknown --only, and a
// folder with no block linears; none leaves a destination behind.
TEST(Quantize, BadArgumentsAreRefusedAndLeaveNothing) {
  TempDir d;
  QuantizeOptions opt;
  const std::string dst = (d.path() / "out").string();
  EXPECT_TRUE(has(error_of([&] { quantize_folder((d.path() / "absent").string(), dst, opt); }), "source folder not found"));
  fs::create_directories(d.path() / "exists");
  EXPECT_TRUE(has(error_of([&] { quantize_folder(tiny("siglip2"), (d.path() / "exists").string(), opt); }), "exists"));
  QuantizeOptions only = opt;
  only.only = {"no_such_part"};
  EXPECT_TRUE(has(error_of([&] { quantize_folder(tiny("flux.1-dev"), dst, only); }), "no_such_part"));
  // The VAE alone has no numbered-block linears.
  fs::create_directories(d.path() / "vae-only");
  const fs::path vae = copy_folder((fs::path(tiny("flux.1-dev")) / "vae").string(), d.path() / "vae-only" / "vae");
  only.only = {"vae"};
  EXPECT_TRUE(has(error_of([&] { quantize_folder((d.path() / "vae-only").string(), dst, only); }), "nothing to convert"));
  // A weight file that is not safetensors.
  const fs::path junk = copy_folder(tiny("siglip2"), d.path() / "junk");
  write_bytes(junk / "model.safetensors", "garbage, not a checkpoint");
  EXPECT_NE(error_of([&] { quantize_folder(junk.string(), dst, opt); }), "(no error)");
  EXPECT_FALSE(fs::exists(dst));
  EXPECT_FALSE(fs::exists(dst + ".partial"));
}

// ---- the host arena of a streamed block (sequential offload on CUDA) ----------------------------

TEST(HostArena, ViewsEqualThePartsAndMapOntoACopy) {
  at::manual_seed(5);
  auto bytes_of = [](const at::Tensor& t) { return t.contiguous().reshape({-1}).view(at::kByte); };
  // The kinds of tensor a block holds: plain and fused weights (q|k|v), fp8 codes with their
  // scales, a non-contiguous weight (cpu_gemv_layout's transposed storage), a 0-d and an empty one.
  nn::Linear q, k, v;
  for (nn::Linear* l : {&q, &k, &v}) {
    l->weight = at::randn({8, 12}).to(at::kBFloat16);
    l->bias = at::randn({8}).to(at::kBFloat16);
  }
  nn::Linear qkv = nn::Linear::fuse({q, k, v});
  std::vector<at::Tensor> parts = {qkv.weight,
                                   qkv.bias,
                                   at::randn({16, 32}).to(at::ScalarType::Float8_e4m3fn),
                                   at::rand({16, 1}) + 0.5,
                                   nn::cpu_gemv_layout(at::randn({24, 7})),
                                   at::full({}, 42, at::kLong),
                                   at::empty({0, 4}),
                                   at::randint(0, 2, {3}, at::kBool)};
  ASSERT_FALSE(parts[4].is_contiguous());
  std::vector<at::Tensor> originals;
  std::vector<at::Tensor*> ptrs;
  int64_t expected_bytes = 0;
  for (auto& t : parts) {
    originals.push_back(t.clone());
    ptrs.push_back(&t);
    expected_bytes += (static_cast<int64_t>(t.nbytes()) + 255) / 256 * 256;
  }
  const at::Tensor arena = nn::detail::pack_host_arena(ptrs, /*pinned=*/false);
  ASSERT_EQ(arena.scalar_type(), at::kByte);
  EXPECT_EQ(arena.numel(), expected_bytes);  // one allocation, nothing rounded beyond 256 bytes a tensor
  const auto* base = static_cast<const uint8_t*>(arena.data_ptr());
  for (size_t i = 0; i < parts.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_TRUE(parts[i].is_alias_of(arena));  // a view, not a copy
    EXPECT_TRUE(parts[i].is_contiguous());
    EXPECT_EQ(parts[i].scalar_type(), originals[i].scalar_type());
    EXPECT_EQ(parts[i].sizes(), originals[i].sizes());
    if (parts[i].numel() > 0) EXPECT_EQ((static_cast<const uint8_t*>(parts[i].data_ptr()) - base) % 256, 0);
    EXPECT_TRUE(at::equal(bytes_of(parts[i]), bytes_of(originals[i])));
  }
  // The device slot: a copy of the arena's bytes, with every tensor at the same offset.
  const at::Tensor slot = at::zeros({arena.numel() + 1000}, at::kByte);
  slot.slice(0, 0, arena.numel()).copy_(arena);
  for (size_t i = 0; i < parts.size(); ++i) {
    SCOPED_TRACE(i);
    const at::Tensor t = nn::detail::view_at_same_offset(parts[i], arena, slot);
    if (t.numel() > 0) EXPECT_TRUE(t.is_alias_of(slot));
    EXPECT_EQ(t.scalar_type(), originals[i].scalar_type());
    EXPECT_TRUE(at::equal(bytes_of(t), bytes_of(originals[i])));
  }
  EXPECT_THROW(nn::detail::view_at_same_offset(at::ones({4}), arena, slot), Error);
  EXPECT_THROW(nn::detail::view_at_same_offset(parts[0], arena, at::zeros({16}, at::kByte)), Error);
  if (!at::hasCUDA()) {  // no pinned memory without a GPU: refused by name, not a crash
    at::Tensor t = at::ones({4});
    EXPECT_THROW(nn::detail::pack_host_arena({&t}, /*pinned=*/true), Error);
  }
}
