#pragma once
// WeightStore: strict, tracked access to a checkpoint's tensors by their published names, with
// prefix views in the style of candle's VarBuilder:
//   auto w = store.root().sub("model.layers").sub(3);
//   at::Tensor q = w.get("self_attn.q_proj.weight", {3584, 3584});
// Shapes are checked (-1 matches any size), floating tensors are converted to the runtime dtype and
// device on the way (and checked for NaN/Inf), every fetched key is recorded, and finish() fails on
// keys left unused.
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/quant_format.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/runtime.h"

namespace omniflux {

class WeightView;

// Held by shared_ptr (open() makes one) so streamed blocks can keep it alive.
class WeightStore : public std::enable_shared_from_this<WeightStore> {
 public:
  WeightStore(Checkpoint checkpoint, RuntimeOptions rt);
  // Opens a file, a folder or a shard index (see Checkpoint::open).
  static std::shared_ptr<WeightStore> open(const std::string& path, const RuntimeOptions& rt = {});

  WeightView root();
  const Checkpoint& checkpoint() const { return ckpt_; }
  const RuntimeOptions& runtime() const { return rt_; }

  bool contains(const std::string& name) const { return ckpt_.contains(name); }
  const TensorInfo& info(const std::string& name) const;  // throws Error naming key and file
  // Fetches a tensor, checks its shape, converts it, then moves it to the runtime device. A tensor
  // that needs no conversion views the file mapping.
  //  - `dtype` Undefined or floating: a floating-point parameter, converted to `dtype` (Undefined:
  //    the runtime's compute dtype). Stored as integers or bool it is an Error naming the tensor.
  //    With RuntimeOptions::check_finite_weights, NaN or Inf (after conversion) is an Error too.
  //  - `dtype` integer or bool: an integer buffer, converted to that dtype.
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape,
                 c10::ScalarType dtype = c10::ScalarType::Undefined);
  // A quantised linear weight: `name` holds fp8 e4m3fn or int8 codes [out, in] (kept as stored,
  // moved to the device) and `name + "_scale"` the per-output-channel scale, returned as [out, 1]
  // float32. Errors name the key for a wrong dtype, a missing scale or a scale of the wrong shape.
  QuantizedWeight get_quantized(const std::string& name, const std::vector<int64_t>& shape);
  // True when the folder's config.json declares a quantization_config (checked at open).
  bool quantized() const { return quantized_; }

  // Where get() puts tensors, instead of the runtime's device, while a Target is alive: the CUDA
  // sequential offload builds its host copies of the streamed blocks this way (pinned CPU memory).
  struct Target {
    Target(WeightStore& store, c10::Device device, bool pinned);
    ~Target();
    Target(const Target&) = delete;
    Target& operator=(const Target&) = delete;
    WeightStore& store;
  };
  // Gives the pages of the mapped file behind every used tensor under `prefix` back to the OS
  // (tensors that view them stay valid and fault them in again). Streamed blocks call it after use
  // so the resident set holds about one block.
  void drop_pages(const std::string& prefix);

  // Declares keys under `prefix` as ignorable (training-only weights, an unused head...).
  void ignore_prefix(const std::string& prefix);
  void mark_used(const std::string& name);
  std::vector<std::string> unused() const;  // neither fetched nor ignorable, sorted
  // Throws Error listing the keys left unused.
  void finish() const;

 private:
  Checkpoint ckpt_;
  RuntimeOptions rt_;
  std::set<std::string> used_;
  std::vector<std::string> ignored_prefixes_;
  bool quantized_ = false;
  std::string config_path_;  // the config.json open() read (empty: none, or not opened through open())
  std::set<std::string> finite_checked_;
  bool has_target_ = false, target_pinned_ = false;
  c10::Device target_device_ = c10::Device(c10::kCPU);
};

class WeightView {
 public:
  WeightView(WeightStore* store, std::string prefix) : store_(store), prefix_(std::move(prefix)) {}

  WeightView sub(const std::string& name) const;
  WeightView sub(int64_t index) const { return sub(std::to_string(index)); }
  const std::string& prefix() const { return prefix_; }
  std::string key(const std::string& name) const { return prefix_.empty() ? name : prefix_ + "." + name; }

  bool contains(const std::string& name) const { return store_->contains(key(name)); }
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape,
                 c10::ScalarType dtype = c10::ScalarType::Undefined) const {
    return store_->get(key(name), shape, dtype);
  }
  // Undefined tensor when absent.
  at::Tensor get_optional(const std::string& name, const std::vector<int64_t>& shape,
                          c10::ScalarType dtype = c10::ScalarType::Undefined) const {
    return contains(name) ? get(name, shape, dtype) : at::Tensor();
  }
  QuantizedWeight get_quantized(const std::string& name, const std::vector<int64_t>& shape) const {
    return store_->get_quantized(key(name), shape);
  }
  WeightStore& store() const { return *store_; }

 private:
  WeightStore* store_;
  std::string prefix_;
};

}  // namespace omniflux
