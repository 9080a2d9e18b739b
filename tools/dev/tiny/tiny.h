#pragma once
// omniflux-tiny: writes tiny random-weight model folders in the real layouts, for tests and the
// demo. Each model registers a writer in its own file of this folder:
//
//   OMNIFLUX_TINY_MODEL(flux_1_dev, "flux.1-dev") {
//     TinyWeights w(ctx.seed);                 // seeded, conventional initialisation
//     w.linear("x_embedder", 32, 64);
//     w.save(ctx.dir / "transformer" / "diffusion_pytorch_model.safetensors");
//     ...
//   }
//
// ctx.dir is OUT/<folder name>; ctx.tokenizers is the folder holding the real tokenizer files
// (tests/fixtures/tokenizers: clip/, t5/, qwen2/).
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "omniflux/io/safetensors.h"

namespace omniflux::tiny {

struct TinyContext {
  std::filesystem::path dir;         // the model's output folder (created)
  std::filesystem::path tokenizers;  // real tokenizer files
  uint64_t seed = 0;
  // "tiny" (tests, demo: a few MB) or "medium" (memory benchmarks: about 1 GB per pipeline, so
  // that offload and quantisation make measurable differences).
  std::string preset = "tiny";
  bool medium() const { return preset == "medium"; }

  void write_json(const std::filesystem::path& rel, const nlohmann::json& j) const;
  // Copies tokenizers/<from>/<name> for each name into dir/<to>/.
  void copy_tokenizer(const std::string& from, const std::string& to, const std::vector<std::string>& names) const;
};

// Seeded random tensors with the fixtures' initialisation conventions (MANIFEST "weights_init"):
// matrices N(0, 1/fan_in), embeddings N(0, 1), norm scales 1 + 0.1 N, biases 0.02 N.
// Header-only so that omniflux-bench can build random full-size weights with the same code.
// shapes_only() holds meta tensors instead (names, shapes, dtype, no data): saved, they make the
// header-only stand-ins of full-size checkpoints that omniflux-plan's dry runs load.
class TinyWeights {
 public:
  explicit TinyWeights(uint64_t seed, at::ScalarType dtype = at::kFloat)
      : gen_(at::detail::createCPUGenerator(seed)), dtype_(dtype) {}
  // Drawn on `device` by its default generator (seeded here), for full-size GPU benchmarks that
  // would spend minutes drawing tens of GB on the CPU. Not the CPU stream: values differ.
  TinyWeights(uint64_t seed, at::ScalarType dtype, c10::Device device) : TinyWeights(seed, dtype) {
    device_ = device;
    if (!device.is_cpu()) at::manual_seed(seed);
  }
  static TinyWeights shapes_only(at::ScalarType dtype) {
    TinyWeights w(0, dtype);
    w.meta_ = true;
    return w;
  }
  // std < 0: 1/sqrt(fan_in)
  void matrix(const std::string& name, std::vector<int64_t> shape, double std = -1) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    if (std < 0) std = 1.0 / std::sqrt(static_cast<double>(fan_in));
    put(name, shape, [&] { return randn(shape).mul_(std); });
  }
  void embedding(const std::string& name, int64_t n, int64_t dim) {
    put(name, {n, dim}, [&] { return randn({n, dim}); });
  }
  // name.weight (+ name.bias)
  void norm(const std::string& name, int64_t dim, bool bias) {
    put(name + ".weight", {dim}, [&] { return 1 + 0.1 * randn({dim}); });
    if (bias) put(name + ".bias", {dim}, [&] { return 0.02 * randn({dim}); });
  }
  void linear(const std::string& name, int64_t out, int64_t in, bool bias = true) {
    matrix(name + ".weight", {out, in});
    if (bias) put(name + ".bias", {out}, [&] { return 0.02 * randn({out}); });
  }
  void conv(const std::string& name, int64_t out, int64_t in, int64_t k) {
    matrix(name + ".weight", {out, in, k, k});
    put(name + ".bias", {out}, [&] { return 0.02 * randn({out}); });
  }
  void save(const std::filesystem::path& file) const {
    std::filesystem::create_directories(file.parent_path());
    save_safetensors(file.string(), tensors_, {{"format", "pt"}});
  }
  size_t size() const { return tensors_.size(); }
  // Names written from now on start with `prefix` (e.g. "denoise_tower.denoiser.").
  void set_prefix(std::string prefix) { prefix_ = std::move(prefix); }
  // N(0, std^2) of any shape (a SigLIP probe, a logit scale...).
  void normal(const std::string& name, std::vector<int64_t> shape, double std) {
    put(name, shape, [&] { return randn(shape).mul_(std); });
  }
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }

 private:
  at::Tensor randn(const std::vector<int64_t>& shape) {
    return device_.is_cpu() ? at::randn(shape, gen_, at::kFloat) : at::randn(shape, at::TensorOptions().device(device_));
  }
  void put(const std::string& name, const std::vector<int64_t>& shape, const std::function<at::Tensor()>& make) {
    tensors_[prefix_ + name] = meta_ ? at::empty(shape, at::TensorOptions().device(at::kMeta).dtype(dtype_))
                                     : make().to(dtype_);
  }
  bool meta_ = false;
  c10::Device device_ = c10::kCPU;
  std::string prefix_;
  at::Generator gen_;
  at::ScalarType dtype_;
  std::map<std::string, at::Tensor> tensors_;
};

struct TinyModel {
  std::string folder;  // name of the folder under OUT
  std::function<void(TinyContext&)> write;
};
std::map<std::string, TinyModel>& registry();

struct Registrar {
  Registrar(const char* name, const char* folder, std::function<void(TinyContext&)> write) {
    registry()[name] = {folder, std::move(write)};
  }
};

}  // namespace omniflux::tiny

#define OMNIFLUX_TINY_MODEL(NAME, FOLDER)                                                   \
  static void tiny_write_##NAME(omniflux::tiny::TinyContext&);                             \
  static omniflux::tiny::Registrar tiny_reg_##NAME(#NAME, FOLDER, tiny_write_##NAME);      \
  static void tiny_write_##NAME([[maybe_unused]] omniflux::tiny::TinyContext& ctx)
