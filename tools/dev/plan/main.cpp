// omniflux-plan [--request flux|uniworld|xomni|all] [--configs DIR] [--tokenizers DIR] [--work DIR]
//               [--keep] [--json]
// The meta-device dry run of the real models (omniflux/plan.h) at the real request sizes:
//   flux      FLUX.1-dev text to image at 1024^2
//   uniworld  a UniWorld-V1 edit at 1024^2 with two 1024^2 reference images
//   xomni     X-Omni text to image at 1152^2 (5184 codes), LM CFG on
// The folders are header-only stand-ins written from the published config.json files in
// models/configs/ (weights as holes in sparse safetensors files, in the official key layouts), so
// nothing is downloaded or allocated. Prints a table per request (and JSON lines with --json);
// exits 1 when any component fails.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include <ATen/ATen.h>

#include "../tiny/flux_weights.h"
#include "../tiny/uniworld_weights.h"
#include "../tiny/xomni_tokenizer.h"
#include "cli.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/plan.h"

namespace fs = std::filesystem;
using namespace omniflux;
using namespace omniflux::tiny;

namespace {

// The repository folder holding `rel`, found from the binary (build/bin/) or the working directory.
fs::path find_up(const char* argv0, const std::string& rel) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::path(argv0), ec).parent_path();
  for (int i = 0; i < 5 && !p.empty(); ++i, p = p.parent_path())
    if (fs::is_directory(p / rel)) return p / rel;
  return fs::current_path() / rel;
}

void copy_in(const fs::path& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error("cannot copy", from.string(), to.string(), ec.message());
}

TinyWeights shapes() { return TinyWeights::shapes_only(at::kBFloat16); }

// --- stand-ins, shapes read from the published configs --------------------------------------------

FluxDitShape dit_shape(const Config& c) {
  FluxDitShape s;
  s.heads = c.get_int("num_attention_heads");
  s.head_dim = c.get_int("attention_head_dim");
  s.layers = c.get_int("num_layers");
  s.single = c.get_int("num_single_layers");
  s.joint = c.get_int("joint_attention_dim");
  s.pooled = c.get_int("pooled_projection_dim");
  s.in = c.get_int("in_channels");
  s.axes = c.get_int_list("axes_dims_rope", {16, 56, 56});
  return s;
}

void write_flux(const fs::path& configs, const fs::path& tokenizers, const fs::path& out) {
  const fs::path src = configs / "FLUX.1-dev";
  for (const char* f : {"model_index.json", "transformer/config.json", "vae/config.json", "text_encoder/config.json",
                        "text_encoder_2/config.json", "scheduler/scheduler_config.json"})
    copy_in(src / f, out / f);
  for (const char* f : {"vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"})
    copy_in(tokenizers / "clip" / f, out / "tokenizer" / f);
  for (const char* f : {"spiece.model", "special_tokens_map.json", "tokenizer_config.json", "tokenizer.json"})
    copy_in(tokenizers / "t5" / f, out / "tokenizer_2" / f);
  {
    TinyWeights w = shapes();
    flux_dit_weights(w, dit_shape(Config::load((src / "transformer").string())));
    w.save(out / "transformer" / "diffusion_pytorch_model.safetensors");
  }
  {
    const Config c = Config::load((src / "vae").string());
    VaeShape s{c.get_int_list("block_out_channels"), c.get_int("norm_num_groups"), c.get_int("layers_per_block"),
               c.get_int("latent_channels"), c.get_int("sample_size")};
    TinyWeights w = shapes();
    vae_weights(w, s);
    w.save(out / "vae" / "diffusion_pytorch_model.safetensors");
  }
  {
    const Config c = Config::load((src / "text_encoder").string());
    ClipShape s{c.get_int("vocab_size"), c.get_int("hidden_size"), c.get_int("intermediate_size"),
                c.get_int("num_hidden_layers"), c.get_int("num_attention_heads")};
    TinyWeights w = shapes();
    clip_weights(w, s);
    w.save(out / "text_encoder" / "model.safetensors");
  }
  {
    const Config c = Config::load((src / "text_encoder_2").string());
    T5Shape s{c.get_int("vocab_size"), c.get_int("d_model"), c.get_int("d_kv"), c.get_int("num_heads"),
              c.get_int("d_ff"), c.get_int("num_layers"), c.get_int("relative_attention_num_buckets")};
    TinyWeights w = shapes();
    t5_weights(w, s);
    w.save(out / "text_encoder_2" / "model.safetensors");
  }
}

SiglipShape siglip_shape(const Config& v) {
  return {v.get_int("hidden_size"), v.get_int("intermediate_size"), v.get_int("num_hidden_layers"),
          v.get_int("num_attention_heads"), v.get_int("image_size"), v.get_int("patch_size")};
}

void write_siglip(const fs::path& configs, const fs::path& out) {
  const fs::path src = configs / "siglip2-so400m-patch16-512";
  copy_in(src / "config.json", out / "config.json");
  copy_in(src / "preprocessor_config.json", out / "preprocessor_config.json");
  const Config c = Config::load(src.string());
  const Config t = c.sub("text_config");
  SiglipTextShape ts{t.get_int("vocab_size"), t.get_int("hidden_size"), t.get_int("intermediate_size"),
                     t.get_int("num_hidden_layers"), t.get_int("max_position_embeddings", 64),
                     t.get_int("projection_size", t.get_int("hidden_size"))};
  TinyWeights w = shapes();
  siglip_weights(w, siglip_shape(c.sub("vision_config")), ts);
  w.save(out / "model.safetensors");
}

void write_uniworld(const fs::path& configs, const fs::path& tokenizers, const fs::path& out) {
  const fs::path src = configs / "UniWorld-V1";
  copy_in(src / "config.json", out / "config.json");
  copy_in(src / "preprocessor_config.json", out / "preprocessor_config.json");
  copy_in(tokenizers / "qwen2" / "tokenizer.json", out / "tokenizer.json");
  const Config c = Config::load(src.string());
  const Config v = c.sub("vision_config");
  UniWorldShape s;
  QwenVlShape& q = s.qwen;
  q.vocab = c.get_int("vocab_size");
  q.hidden = c.get_int("hidden_size");
  q.inter = c.get_int("intermediate_size");
  q.layers = c.get_int("num_hidden_layers");
  q.heads = c.get_int("num_attention_heads");
  q.kv = c.get_int("num_key_value_heads");
  q.v_depth = v.get_int("depth");
  q.v_hidden = v.get_int("hidden_size");
  q.v_heads = v.get_int("num_heads");
  q.v_inter = v.get_int("intermediate_size");
  s.siglip = siglip_shape(Config::load((configs / "siglip2-so400m-patch16-512").string()).sub("vision_config"));
  s.dit = dit_shape(c.sub("denoise_tower").sub("denoiser_config"));
  if (v.get_int("out_hidden_size") != q.hidden)
    throw Error("vision out_hidden_size differs from hidden_size", src.string(), std::to_string(q.hidden),
                std::to_string(v.get_int("out_hidden_size")));
  TinyWeights w = shapes();
  qwen2_5_vl_weights(w, q);
  uniworld_tower_weights(w, s);
  w.save(out / "model.safetensors");
}

void write_xomni(const fs::path& configs, const fs::path& tokenizers, const fs::path& out) {
  const fs::path src = configs / "X-Omni-En";
  copy_in(src / "config.json", out / "config.json");
  copy_in(src / "diffusers" / "config.json", out / "diffusers" / "config.json");
  const Config c = Config::load(src.string());
  // <MM-Token-k> at vocab_size + k, where the LM's image codes start (XOmniLM::check_image_token_ids).
  fs::create_directories(out);
  write_xomni_tokenizer(tokenizers / "qwen2" / "tokenizer.json", out / "tokenizer.json", c.get_int("image_vocab_size"),
                        c.get_int("vocab_size"));
  const int64_t H = c.get_int("hidden_size"), I = c.get_int("intermediate_size"), L = c.get_int("num_hidden_layers"),
                nh = c.get_int("num_attention_heads"), kv = c.get_int("num_key_value_heads"), V = c.get_int("vocab_size"),
                M = c.get_int("mm_vocab_size"), hd = H / nh;
  {  // the LM (modeling_xomni.py names)
    TinyWeights w = shapes();
    w.embedding("model.lm_embed_tokens.weight", V, H);
    w.embedding("model.mm_embed_tokens.weight", M, H);
    for (int64_t i = 0; i < L; ++i) {
      const std::string l = "model.layers." + std::to_string(i) + ".";
      w.norm(l + "input_layernorm", H, false);
      w.linear(l + "self_attn.q_proj", nh * hd, H);
      w.linear(l + "self_attn.k_proj", kv * hd, H);
      w.linear(l + "self_attn.v_proj", kv * hd, H);
      w.linear(l + "self_attn.o_proj", H, nh * hd, false);
      w.norm(l + "post_attention_layernorm", H, false);
      w.linear(l + "mlp.gate_proj", I, H, false);
      w.linear(l + "mlp.up_proj", I, H, false);
      w.linear(l + "mlp.down_proj", H, I, false);
    }
    w.norm("model.lm_norm", H, false);
    w.norm("model.mm_norm", H, false);
    w.linear("lm_head", V, H, false);
    w.linear("mm_head", M, H, false);
    w.save(out / "model.safetensors");
  }
  const Config enc = c.sub("vision_config").sub("encoder");
  // SigLIP2-g (siglip2_giant_patch16_384: 1536 wide, 40 blocks, MLP 6144; timm names, fused qkv,
  // a 24 x 24 position table for its 384^2 training size).
  const int64_t d = enc.get_int("z_channels"), mlp = 6144, blocks = 40, patch = 16, grid = 384 / 16;
  {
    TinyWeights w = shapes();
    w.conv("patch_embed.proj", d, 3, patch);
    w.matrix("pos_embed", {1, grid * grid, d}, 1.0);
    for (int64_t i = 0; i < blocks; ++i) {
      const std::string b = "blocks." + std::to_string(i) + ".";
      w.norm(b + "norm1", d, true);
      w.linear(b + "attn.qkv", 3 * d, d);
      w.linear(b + "attn.proj", d, d);
      w.norm(b + "norm2", d, true);
      w.linear(b + "mlp.fc1", mlp, d);
      w.linear(b + "mlp.fc2", d, mlp);
    }
    w.save(out / enc.get_string("siglip_path"));
  }
  {  // VQConvProjector
    const int64_t k = enc.get_int("codebook_size"), cd = enc.get_int("codebook_dim");
    TinyWeights w = shapes();
    w.conv("quant_conv", cd, d, 1);
    w.embedding("quantize.embedding.weight", k, cd);
    w.conv("post_quant_conv", d, cd, 1);
    for (int64_t i = 0; i < 2; ++i) {
      const std::string b = "post_conv." + std::to_string(i) + ".";
      w.norm(b + "norm1", d, true);
      w.conv(b + "conv1", d, d, 3);
      w.norm(b + "norm2", d, true);
      w.conv(b + "conv2", d, d, 3);
    }
    w.save(out / enc.get_string("projector_path"));
  }
  {  // diffusers/: the fine-tuned FLUX DiT plus the SigLIP injection Linear (bias-free, as UniAR's)
    const FluxDitShape s = dit_shape(Config::load((src / "diffusers").string()));
    TinyWeights w = shapes();
    flux_dit_weights(w, s);
    w.linear("siglip_embedder", s.heads * s.head_dim, d, false);
    w.save(out / "diffusers" / "diffusion_pytorch_model.safetensors");
  }
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = omniflux::cli;
  return cli::run("omniflux-plan", [&] {
  std::string request = "all", configs_arg, tokenizers_arg, work_arg;
  bool keep = false, json = false;
  double max_vram = 0;
  cli::Parser p("omniflux-plan",
                "Builds FLUX.1-dev, UniWorld-V1 and X-Omni from their published configs (models/configs) with every\n"
                "weight on the meta device, runs them at real request sizes, and prints per component the\n"
                "parameters, bytes, largest activation and KV cache, then the peak device memory per offload mode.");
  p.choice("--request", &request, {"all", "flux", "uniworld", "xomni"}, "which request to plan");
  p.path("--configs", &configs_arg, "DIR", "the published configs (default: the repository's models/configs)");
  p.path("--tokenizers", &tokenizers_arg, "DIR", "the tokenizer files (default: tests/fixtures/tokenizers)");
  p.path("--work", &work_arg, "DIR", "where the header-only stand-in folders go (default: a temporary folder)");
  p.toggle("--keep", &keep, "keep the stand-in folders");
  p.toggle("--json", &json, "also print one JSON line per component");
  p.number("--max-vram", &max_vram, 0, 1e6, "GB", "mark which offload mode and format fits this budget");
  int world = 1;
  ParallelOptions popt;
  p.integer("--world", &world, 1, 1024, "N", "plan rank 0 of N simulated ranks: what each run sends (docs/distributed.md)");
  p.integer("--cfg-parallel", &popt.cfg, 1, 2, "C", "with --world: CFG pairs on different ranks (world = C x inner)");
  p.toggle("--no-sequence-parallel", &popt.sequence, "with --world: no Ulysses split of the DiTs", false);
  p.toggle("--no-tensor-parallel", &popt.tensor, "with --world: no tensor split of the language models", false);
  RuntimeOptions placed;  // --device with a placement: each device's peak
  placed.device = "cuda:0";
  p.custom("--device", "D[,COMPONENT=D...]", "plan this placement too, e.g. cuda:0,dit=cuda:1 (docs/distributed.md)",
           [&](const std::string& v) { cli::parse_device(v, &placed); });
  if (!p.parse(argc, argv)) return cli::kExitOk;
  plan::DryRunOptions dry;
  if (world > 1) dry.rt.parallel = Parallel::simulate(world, popt);
  const fs::path configs = configs_arg.empty() ? find_up(argv[0], "models/configs") : fs::path(configs_arg);
  const fs::path tokenizers = tokenizers_arg.empty() ? find_up(argv[0], "tests/fixtures/tokenizers") : fs::path(tokenizers_arg);
  fs::path work = work_arg;
  const bool own_work = work.empty();
  if (own_work) {
    std::random_device rd;
    work = fs::temp_directory_path() / ("omniflux-plan-" + std::to_string(rd()));
  }
  int failed = 0;
  try {
    fs::create_directories(work);
    const fs::path flux = work / "FLUX.1-dev", siglip = work / "siglip2-so400m-patch16-512",
                   uniworld = work / "UniWorld-V1", xomni = work / "X-Omni-En";
    write_flux(configs, tokenizers, flux);
    auto report = [&](const std::string& title, const std::vector<plan::ComponentPlan>& plans) {
      std::cout << "== " << title << "\n" << plan::to_table(plans);
      int64_t params = 0, bf16 = 0;
      for (const auto& c : plans) {
        params += c.weights.params;
        bf16 += c.weights.bytes_bf16;
        if (!c.ok()) ++failed;
        if (json) std::cout << plan::to_json(c) << "\n";
      }
      char total[96];
      std::snprintf(total, sizeof total, "   total %lld params, %.2f GiB in bf16\n", static_cast<long long>(params),
                    bf16 / double(int64_t(1) << 30));
      std::cout << total;
      if (failed == 0) std::cout << plan::offload_table(plans, {"bf16", "fp8"}, max_vram);
      if (failed == 0 && !placed.placement.empty()) std::cout << plan::placement_table(plans, placed, {"bf16", "fp8"}, max_vram);
      if (dry.rt.parallel) std::cout << plan::traffic_table(plans, *dry.rt.parallel);
      std::cout << std::flush;
    };
    if (request == "all" || request == "flux")
      report("FLUX.1-dev text to image, 1024x1024", plan::plan_flux(flux.string(), {}, dry));
    if (request == "all" || request == "uniworld") {
      write_siglip(configs, siglip);
      write_uniworld(configs, tokenizers, uniworld);
      report("UniWorld-V1 edit, 1024x1024, two 1024x1024 references",
             plan::plan_uniworld(uniworld.string(), flux.string(), siglip.string(), {}, dry));
    }
    if (request == "all" || request == "xomni") {
      write_xomni(configs, tokenizers, xomni);
      report("X-Omni text to image, 1152x1152 (5184 codes), CFG", plan::plan_xomni(xomni.string(), flux.string(), {}, dry));
    }
    std::cout << "meta kernels supplied by omniflux (none in LibTorch's C++ build):";
    for (const auto& k : plan::supplied_meta_kernels()) std::cout << " " << k;
    std::cout << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-plan: %s\n", e.what());
    failed = -1;
  }
  if (!keep) {
    std::error_code ec;
    fs::remove_all(own_work ? work : work / "FLUX.1-dev", ec);
    if (!own_work)
      for (const char* d : {"siglip2-so400m-patch16-512", "UniWorld-V1", "X-Omni-En"}) fs::remove_all(work / d, ec);
  }
  return failed == 0 ? cli::kExitOk : cli::kExitRuntimeError;
  });
}
