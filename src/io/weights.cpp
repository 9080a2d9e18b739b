#include "omniflux/io/weights.h"

#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/config.h"

namespace omniflux {

WeightStore::WeightStore(Checkpoint checkpoint, RuntimeOptions rt)
    : ckpt_(std::move(checkpoint)), rt_(std::move(rt)) {
  rt_.validate();  // every loader opens a WeightStore: the one place options are checked
}

namespace {

// The config.json beside a checkpoint (in the folder, or beside the file), if any.
std::string config_beside(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = fs::is_directory(path, ec) ? fs::path(path) : fs::path(path).parent_path();
  fs::path cfg = dir / "config.json";
  return fs::is_regular_file(cfg, ec) ? cfg.string() : std::string();
}

// quantization_config as omniflux-quantize writes it (compressed-tensors, float- or int-quantized,
// per-channel weights). Anything else would be misread, so it is an error.
bool check_quantization_config(const std::string& config_path) {
  if (config_path.empty()) return false;
  const Config c = Config::load(config_path);
  if (!c.has("quantization_config")) return false;
  const Config q = c.sub("quantization_config");
  const std::string method = q.get_string("quant_method", "");
  if (method != "compressed-tensors")
    throw Error("unknown quantisation method", config_path + ": quantization_config.quant_method",
                "compressed-tensors (as omniflux-quantize writes)", "'" + method + "'");
  const std::string format = q.get_string("format", "");
  if (format != "float-quantized" && format != "int-quantized")
    throw Error("unsupported compressed-tensors format", config_path + ": quantization_config.format",
                "float-quantized or int-quantized", "'" + format + "'");
  return true;
}

}  // namespace

std::shared_ptr<WeightStore> WeightStore::open(const std::string& path, const RuntimeOptions& rt) {
  rt.validate();  // before mapping anything
  const std::string config = config_beside(path);
  const bool quantized = check_quantization_config(config);
  auto store = std::make_shared<WeightStore>(Checkpoint::open(path, rt.allow_outside_paths), rt);
  store->quantized_ = quantized;
  store->config_path_ = config;
  return store;
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
  // Meta tensors (dry runs) have no values to check.
  if (t.numel() == 0 || t.is_meta() || std::isfinite(t.sum(at::kFloat).item<double>())) return;
  if (at::isfinite(t).all().item<bool>()) return;
  const int64_t nan = at::isnan(t).sum().item<int64_t>(), inf = at::isinf(t).sum().item<int64_t>();
  throw Error("weight holds non-finite values", where,
              "finite numbers (RuntimeOptions::check_finite_weights = false skips this check)",
              std::to_string(nan) + " NaN and " + std::to_string(inf) + " Inf of " + std::to_string(t.numel()));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
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
  // A quantised weight read as a plain tensor would be silently wrong by its scale.
  if (ckpt_.contains(name + "_scale"))
    throw Error("quantised weight where this model reads a plain tensor", ckpt_.source_of(name) + ": " + name,
                "an unquantised tensor (this layer has no quantised path; requantise without it)",
                std::string(dtype_name(ti.dtype)) + " codes with " + name + "_scale");
  if (quantized_ && ends_with(name, ".weight") && (ti.dtype == Dtype::F8_E4M3 || ti.dtype == Dtype::I8))
    throw Error("quantised weight without its scale", ckpt_.source_of(name) + ": " + name, name + "_scale",
                "missing");
  // A float parameter stored as integers would load silently (a norm weight) or fail later with a
  // raw LibTorch message (a linear weight): Undefined and floating targets ask for a float tensor.
  const bool want_float = dtype == c10::ScalarType::Undefined || c10::isFloatingType(dtype);
  if (want_float && !is_float(ti.dtype))
    throw Error("a floating-point parameter is stored with an integer dtype", ckpt_.source_of(name) + ": " + name,
                "F32, F16, BF16, F64 or F8", dtype_name(ti.dtype));
  used_.insert(name);
  at::Tensor t = ckpt_.get(name);
  const void* source = t.data_ptr();
  const c10::Device device = has_target_ ? target_device_ : rt_.torch_device();
  if (is_float(ti.dtype)) {
    const c10::ScalarType target = dtype == c10::ScalarType::Undefined ? rt_.compute_dtype() : dtype;
    if (ti.dtype == Dtype::F8_E4M3 || ti.dtype == Dtype::F8_E5M2) {
      // Decode on the target device so only the bits cross the bus.
      t = f8_to_float(t.to(device), ti.dtype);
    }
    if (t.scalar_type() != target || t.device() != device) t = t.to(device, target);
    // Once per tensor: streamed blocks are built again on every use.
    // Keyed by dtype too: a value finite in fp32 can overflow in fp16.
    const std::string checked = name + "|" + c10::toString(target);
    if (rt_.check_finite_weights && !finite_checked_.count(checked)) {
      check_finite_weight(t, ckpt_.source_of(name) + ": " + name);
      finite_checked_.insert(checked);  // only once it passed: a failed tensor fails again
    }
  } else {
    if (dtype != c10::ScalarType::Undefined && dtype != t.scalar_type()) t = t.to(dtype);
    if (t.device() != device) t = t.to(device);
  }
  if (has_target_ && target_pinned_ && device.is_cpu() && !t.is_pinned()) t = t.pin_memory();
  // Converted or moved: the mapped pages are no longer needed (peak stays near one tensor).
  if (t.data_ptr() != source) ckpt_.drop_pages(name);
  return t;
}

QuantizedWeight WeightStore::get_quantized(const std::string& name, const std::vector<int64_t>& shape) {
  if (!ckpt_.contains(name)) throw Error("missing tensor", ckpt_.path() + ": " + name, shape_str(shape), "no such key");
  const TensorInfo& ti = ckpt_.info(name);
  const std::string where = ckpt_.source_of(name) + ": " + name;
  if (shape.size() != 2 || ti.shape.size() != 2 || (shape[0] >= 0 && ti.shape[0] != shape[0]) ||
      (shape[1] >= 0 && ti.shape[1] != shape[1]))
    throw Error("wrong tensor shape", where, shape_str(shape), shape_str(ti.shape));
  if (ti.dtype != Dtype::F8_E4M3 && ti.dtype != Dtype::I8)
    throw Error("quantised weight has an unsupported dtype", where, "F8_E4M3 or I8 codes", dtype_name(ti.dtype));
  const std::string sname = name + "_scale";
  if (!ckpt_.contains(sname)) throw Error("quantised weight without its scale", where, sname, "missing");
  // Codes and scales whose config.json does not say how they were made could follow another
  // convention (per-tensor, transposed, a different scale meaning): refuse rather than guess.
  if (!quantized_ && !config_path_.empty())
    throw Error("quantised weights but no quantization_config", config_path_ + " (for " + where + ")",
                "a compressed-tensors quantization_config (as omniflux-quantize writes)", "none");
  const TensorInfo& si = ckpt_.info(sname);
  const int64_t out = ti.shape[0];
  const bool scale_shape_ok = (si.shape.size() == 1 && si.shape[0] == out) ||
                              (si.shape.size() == 2 && si.shape[0] == out && si.shape[1] == 1);
  if (!scale_shape_ok)
    throw Error("weight_scale has the wrong shape", ckpt_.source_of(sname) + ": " + sname,
                "[" + std::to_string(out) + ", 1] (one scale per output channel)", shape_str(si.shape));
  if (si.dtype != Dtype::F32 && si.dtype != Dtype::BF16 && si.dtype != Dtype::F16)
    throw Error("weight_scale must be floating point", ckpt_.source_of(sname) + ": " + sname, "F32, BF16 or F16",
                dtype_name(si.dtype));
  used_.insert(name);
  used_.insert(sname);
  at::Tensor scale = ckpt_.get(sname).to(at::kFloat).reshape({out, 1});
  if (!at::isfinite(scale).all().item<bool>() || (scale <= 0).any().item<bool>())
    throw Error("weight_scale holds a non-positive or non-finite value", ckpt_.source_of(sname) + ": " + sname,
                "finite scales > 0", "a bad value");
  const c10::Device device = has_target_ ? target_device_ : rt_.torch_device();
  QuantizedWeight q;
  q.codes = ckpt_.get(name);
  const void* source = q.codes.data_ptr();
  if (q.codes.device() != device) q.codes = q.codes.to(device);
  if (has_target_ && target_pinned_ && device.is_cpu() && !q.codes.is_pinned()) q.codes = q.codes.pin_memory();
  if (rt_.check_finite_weights && !finite_checked_.count(name)) {
    check_finite_weight(q.codes.to(at::kFloat), ckpt_.source_of(name) + ": " + name);
    finite_checked_.insert(name);  // only once it passed: a failed tensor fails again
  }
  if (q.codes.data_ptr() != source) ckpt_.drop_pages(name);
  q.scale = scale.to(device).contiguous();
  return q;
}

WeightStore::Target::Target(WeightStore& s, c10::Device device, bool pinned) : store(s) {
  if (s.has_target_) throw Error("nested weight targets", "WeightStore::Target");
  s.has_target_ = true;
  s.target_device_ = device;
  s.target_pinned_ = pinned;
}

WeightStore::Target::~Target() { store.has_target_ = false; }

void WeightStore::drop_pages(const std::string& prefix) {
  for (auto it = used_.lower_bound(prefix); it != used_.end() && it->compare(0, prefix.size(), prefix) == 0; ++it)
    ckpt_.drop_pages(*it);
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
