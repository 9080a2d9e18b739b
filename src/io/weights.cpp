#include "omniflux/io/weights.h"

#include <cmath>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux {

WeightStore::WeightStore(Checkpoint checkpoint, RuntimeOptions rt)
    : ckpt_(std::move(checkpoint)), rt_(std::move(rt)) {
  rt_.validate();  // every loader opens a WeightStore: the one place options are checked
}

std::shared_ptr<WeightStore> WeightStore::open(const std::string& path, const RuntimeOptions& rt) {
  rt.validate();  // before mapping anything
  return std::make_shared<WeightStore>(Checkpoint::open(path, rt.allow_outside_paths), rt);
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

namespace {
// NaN/Inf weights (also values a conversion overflowed, e.g. 1e5 to float16) are named at load.
// One reduction per tensor: the sum is finite exactly when every element is, unless it overflows,
// which the exact test then rules out.
void check_finite_weight(const at::Tensor& t, const std::string& where) {
  if (t.numel() == 0 || std::isfinite(t.sum(at::kFloat).item<double>())) return;
  if (at::isfinite(t).all().item<bool>()) return;
  const int64_t nan = at::isnan(t).sum().item<int64_t>(), inf = at::isinf(t).sum().item<int64_t>();
  throw Error("weight holds non-finite values", where,
              "finite numbers (RuntimeOptions::check_finite_weights = false skips this check)",
              std::to_string(nan) + " NaN and " + std::to_string(inf) + " Inf of " + std::to_string(t.numel()));
}
}  // namespace

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
  // A float parameter stored as integers would load silently (a norm weight) or fail later with a
  // raw LibTorch message (a linear weight): Undefined and floating targets ask for a float tensor.
  const bool want_float = dtype == c10::ScalarType::Undefined || c10::isFloatingType(dtype);
  if (want_float && !is_float(ti.dtype))
    throw Error("a floating-point parameter is stored with an integer dtype", ckpt_.source_of(name) + ": " + name,
                "F32, F16, BF16, F64 or F8", dtype_name(ti.dtype));
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
    if (rt_.check_finite_weights) check_finite_weight(t, ckpt_.source_of(name) + ": " + name);
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
