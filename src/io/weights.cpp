#include "omniflux/io/weights.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux {

WeightStore::WeightStore(Checkpoint checkpoint, RuntimeOptions rt)
    : ckpt_(std::move(checkpoint)), rt_(std::move(rt)) {
  (void)rt_.torch_device();  // validate early
  (void)rt_.compute_dtype();
}

std::shared_ptr<WeightStore> WeightStore::open(const std::string& path, const RuntimeOptions& rt) {
  return std::make_shared<WeightStore>(Checkpoint::open(path), rt);
}

WeightView WeightStore::root() { return WeightView(this, ""); }

WeightView WeightView::sub(const std::string& name) const {
  if (name.empty()) throw Error("empty weight prefix", prefix_.empty() ? "<root>" : prefix_);
  return WeightView(store_, key(name));
}

const TensorInfo& WeightStore::info(const std::string& name) const {
  if (!ckpt_.contains(name)) throw Error("missing tensor", ckpt_.path() + ": " + name);
  return ckpt_.info(name);
}

static bool is_float(Dtype d) {
  return d == Dtype::F64 || d == Dtype::F32 || d == Dtype::F16 || d == Dtype::BF16 ||
         d == Dtype::F8_E4M3 || d == Dtype::F8_E5M2;
}

at::Tensor WeightStore::get(const std::string& name, const std::vector<int64_t>& shape,
                            c10::ScalarType dtype) {
  if (!ckpt_.contains(name))
    throw Error("missing tensor", ckpt_.path() + ": " + name, "a tensor of shape " + shape_str(shape),
                "no such key");
  const TensorInfo& ti = ckpt_.info(name);
  bool ok = ti.shape.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == ti.shape[i];
  if (!ok)
    throw Error("wrong tensor shape", ckpt_.source_of(name) + ": " + name, shape_str(shape),
                shape_str(ti.shape));
  used_.insert(name);
  at::Tensor t = ckpt_.get(name);
  const c10::Device device = rt_.torch_device();
  if (is_float(ti.dtype)) {
    const c10::ScalarType target = dtype == c10::ScalarType::Undefined ? rt_.compute_dtype() : dtype;
    if (ti.dtype == Dtype::F8_E4M3 || ti.dtype == Dtype::F8_E5M2) {
      // Decode on the target device so only the bits cross the bus.
      t = f8_to_float(t.to(device), ti.dtype);
    }
    if (t.scalar_type() != target || t.device() != device) t = t.to(device, target);
  } else {
    if (dtype != c10::ScalarType::Undefined && dtype != t.scalar_type()) t = t.to(dtype);
    if (t.device() != device) t = t.to(device);
  }
  return t;
}

at::Tensor WeightStore::get_raw(const std::string& name) {
  if (!ckpt_.contains(name)) throw Error("missing tensor", ckpt_.path() + ": " + name);
  used_.insert(name);
  return ckpt_.get(name);
}

void WeightStore::ignore_prefix(const std::string& prefix) { ignored_prefixes_.push_back(prefix); }

void WeightStore::mark_used(const std::string& name) {
  if (!ckpt_.contains(name)) throw Error("missing tensor", ckpt_.path() + ": " + name);
  used_.insert(name);
}

std::vector<std::string> WeightStore::unused() const {
  std::vector<std::string> out;
  for (const auto& name : ckpt_.names()) {
    if (used_.count(name)) continue;
    bool ignored = false;
    for (const auto& p : ignored_prefixes_)
      if (name.compare(0, p.size(), p) == 0) ignored = true;
    if (!ignored) out.push_back(name);
  }
  return out;
}

void WeightStore::finish() const {
  const auto left = unused();
  if (left.empty()) return;
  std::string list;
  for (size_t i = 0; i < left.size() && i < 20; ++i) list += (i ? ", " : "") + left[i];
  if (left.size() > 20) list += ", ... (" + std::to_string(left.size() - 20) + " more)";
  throw Error("unused tensors in checkpoint", ckpt_.path(), "every tensor used by the model",
              std::to_string(left.size()) + " unused: " + list);
}

}  // namespace omniflux
