// omniflux-bench_dit_disk: a FLUX.1-dev-shaped DiT (12B parameters) with random weights, on disk,
// through the normal loader: load time, one forward at a small size, and the peak RSS, per offload
// mode. It answers "does a 12B DiT run on a machine with less RAM than its weights" on the CPU.
//
//   omniflux-bench_dit_disk write DIR [--weights fp8|int8|bf16] [--seed N]
//       writes DIR/config.json (FLUX.1-dev's transformer config) and one safetensors file, tensor by
//       tensor (block linears quantised per channel as omniflux-quantize does); never holds more
//       than one tensor
//   omniflux-bench_dit_disk run DIR [--offload none|model|sequential] [--size 256] [--text 512]
//       loads the folder and runs one denoising step's forward; prints one JSON line
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "dev/tiny/flux_weights.h"
#include "omniflux/io/quantize.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/flux_dit.h"
#include "sampling/latents.h"

namespace fs = std::filesystem;
using namespace omniflux;
namespace cli = omniflux::cli;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
long peak_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

// FLUX.1-dev's transformer/config.json (black-forest-labs/FLUX.1-dev; models/configs/FLUX.1-dev).
nlohmann::json flux_dev_transformer_config() {
  return {{"_class_name", "FluxTransformer2DModel"}, {"attention_head_dim", 128}, {"axes_dims_rope", {16, 56, 56}},
          {"guidance_embeds", true}, {"in_channels", 64}, {"joint_attention_dim", 4096},
          {"num_attention_heads", 24}, {"num_layers", 19}, {"num_single_layers", 38}, {"patch_size", 1},
          {"pooled_projection_dim", 768}};
}

int write(const std::string& dir, const std::string& format, uint64_t seed) {
  if (fs::exists(dir)) throw Error("the output folder exists", dir, "a new folder", "exists");
  const WeightFormat f = parse_weight_format(format);
  tiny::TinyWeights shapes = tiny::TinyWeights::shapes_only(at::kBFloat16);
  tiny::flux_dit_weights(shapes, tiny::flux_dev_dit());
  auto gen = std::make_shared<at::Generator>(at::detail::createCPUGenerator(seed));
  auto pending_scale = std::make_shared<at::Tensor>();
  std::vector<LazyTensorToWrite> out;
  std::vector<std::string> ignored;
  int64_t params = 0;
  for (const auto& [name, meta] : shapes.tensors()) {
    const std::vector<int64_t> shape = meta.sizes().vec();
    params += meta.numel();
    // N(0, 1/fan_in) matrices, norm scales near 1, small biases: what TinyWeights draws.
    auto draw = [gen, shape, name] {
      at::Tensor t = at::randn(shape, *gen, at::kFloat);
      if (shape.size() >= 2) return t.mul_(1.0 / std::sqrt(static_cast<double>(t[0].numel())));
      const bool scale = name.find("norm") != std::string::npos && name.size() > 7 &&
                         name.compare(name.size() - 7, 7, ".weight") == 0;
      return scale ? t.mul_(0.1).add_(1) : t.mul_(0.02);
    };
    if (f != WeightFormat::Bf16 && is_block_linear_weight(name, shape)) {
      out.push_back({name, f == WeightFormat::Fp8 ? Dtype::F8_E4M3 : Dtype::I8, shape, [draw, f, pending_scale] {
                       QuantizedWeight q = quantize_weight(draw(), f);
                       *pending_scale = q.scale;
                       return q.codes;
                     }});
      out.push_back({name + "_scale", Dtype::F32, {shape[0], 1}, [pending_scale] { return *pending_scale; }});
    } else {
      if (shape.size() == 2 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0)
        ignored.push_back(name.substr(0, name.size() - 7));
      out.push_back({name, Dtype::BF16, shape, [draw] { return draw().to(at::kBFloat16); }});
    }
  }
  const std::string partial = dir + ".partial";
  fs::remove_all(partial);
  fs::create_directories(partial);
  nlohmann::json cfg = flux_dev_transformer_config();
  if (f != WeightFormat::Bf16) cfg["quantization_config"] = nlohmann::json::parse(quantization_config_json(f, ignored));
  std::ofstream(fs::path(partial) / "config.json") << cfg.dump(2);
  const auto t0 = std::chrono::steady_clock::now();
  save_safetensors_lazy((fs::path(partial) / "diffusion_pytorch_model.safetensors").string(), out, {{"format", "pt"}});
  fs::rename(partial, dir);
  const auto bytes = fs::file_size(fs::path(dir) / "diffusion_pytorch_model.safetensors");
  std::cout << nlohmann::json({{"wrote", dir}, {"weights", format}, {"params", params}, {"file_bytes", bytes},
                               {"seconds", seconds_since(t0)}})
                   .dump()
            << "\n";
  return cli::kExitOk;
}

int run(const std::string& dir, const RuntimeOptions& rt, int64_t size, int64_t text) {
  c10::InferenceMode guard;
  const auto t0 = std::chrono::steady_clock::now();
  FluxTransformer m = FluxTransformer::load(dir, rt);
  const double load_s = seconds_since(t0);
  const long rss_after_load = peak_rss_kb();
  const auto dt = rt.compute_dtype();
  const auto dev = rt.torch_device();
  const int64_t latent = flux_latent_size(size), lat = latent / 2;  // VAE latent side, packed tokens per side
  FluxDiTInputs in;
  auto opts = at::TensorOptions().dtype(dt).device(dev);
  at::Generator g = at::detail::createCPUGenerator(1);
  in.hidden_states = at::randn({1, lat * lat, 64}, g, at::kFloat).to(opts);
  in.encoder_hidden_states = at::randn({1, text, 4096}, g, at::kFloat).to(opts);
  in.pooled_projections = at::randn({1, 768}, g, at::kFloat).to(opts);
  in.timestep = at::full({1}, 0.5, opts);
  in.guidance = at::full({1}, 3.5, opts);
  in.img_ids = latent_image_ids(latent, latent).to(opts);
  in.txt_ids = at::zeros({text, 3}, opts);
  const auto t1 = std::chrono::steady_clock::now();
  at::Tensor y = m.forward(in);
  const double step_s = seconds_since(t1);
  if (!at::isfinite(y).all().item<bool>()) throw Error("non-finite DiT output", dir);
  std::cout << nlohmann::json({{"case", "dit_disk"}, {"metric", "step"}, {"value", step_s * 1e3}, {"unit", "ms"},
                               {"folder", dir}, {"offload", offload_name(rt.offload)}, {"dtype", c10::toString(dt)},
                               {"size", size}, {"image_tokens", lat * lat}, {"text_tokens", text},
                               {"threads", at::get_num_threads()}, {"load_s", load_s}, {"step_s", step_s},
                               {"peak_rss_after_load_mib", rss_after_load / 1024.0},
                               {"peak_rss_mib", peak_rss_kb() / 1024.0}})
                   .dump()
            << "\n";
  return cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run("omniflux-bench_dit_disk", [&] {
    std::string dir, weights = "fp8";
    uint64_t seed = 0;
    int64_t size = 256, text = 512;
    RuntimeOptions rt;
    cli::Parser p("omniflux-bench_dit_disk",
                  "A FLUX.1-dev-shaped DiT (12B) with random weights on disk: write it, then load it and time one\n"
                  "forward with the peak RSS, under an offload mode.");
    p.command("write", "Write DIR: config.json and one safetensors file (block linears quantised).");
    p.command("run", "Load DIR and run one forward; prints one JSON line.");
    p.positional("DIR", &dir, "the model folder");
    p.choice("--weights", &weights, {"fp8", "int8", "bf16"}, "storage of the block linears").commands({"write"});
    p.seed("--seed", &seed, "weight seed").commands({"write"});
    p.integer("--size", &size, 16, 4096, "PX", "image side (multiple of 16)").commands({"run"});
    p.integer("--text", &text, 1, 4096, "N", "text tokens").commands({"run"});
    cli::add_runtime_flags(p, &rt);
    if (!p.parse(argc, argv)) return cli::kExitOk;
    cli::apply_runtime(rt);
    if (p.chosen_command() == "write") return write(dir, weights, seed);
    cli::check_input_folder("DIR", dir);
    return run(dir, rt, size, text);
  });
}
