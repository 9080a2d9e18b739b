// Weight figures, the activation probe and the report formats of the dry runs (omniflux/plan.h).
#include "omniflux/plan.h"

#include <algorithm>
#include <cctype>
#include <iomanip>
#include <map>
#include <mutex>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "omniflux/io/quantize.h"
#include "plan/meta_kernels.h"

namespace omniflux::plan {

// --- Weights ------------------------------------------------------------------------------------

// The figure must be what omniflux-quantize writes, so it uses the quantiser's own rule.
bool fp8_eligible(const std::string& name, const std::vector<int64_t>& shape) { return is_block_linear_weight(name, shape); }

namespace {

struct Sizes {
  int64_t params = 0, bf16 = 0, fp8 = 0;
  void add(const std::string& name, const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    params += n;
    bf16 += 2 * n;
    fp8 += fp8_eligible(name, shape) ? n + 4 * shape[0] : 2 * n;
  }
};

// "a.b.12.c" -> ("a.b", "12") at the first numeric component; nothing when there is none.
bool block_key(const std::string& name, std::string& prefix, std::string& index) {
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) return false;
    const size_t next = name.find('.', dot + 1);
    if (next == std::string::npos) return false;
    const std::string part = name.substr(dot + 1, next - dot - 1);
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      prefix = name.substr(0, dot);
      index = part;
      return true;
    }
    start = dot + 1;
  }
  return false;
}

}  // namespace

WeightFigures weight_figures(const Checkpoint& ckpt, const std::vector<std::string>& prefixes) {
  WeightFigures f;
  Sizes total;
  std::map<std::string, std::map<std::string, Sizes>> blocks;  // prefix -> index -> sizes
  for (const auto& name : ckpt.names()) {
    bool take = prefixes.empty();
    for (const auto& p : prefixes) take = take || name.compare(0, p.size(), p) == 0;
    if (!take) continue;
    const auto& shape = ckpt.info(name).shape;
    ++f.tensors;
    total.add(name, shape);
    std::string prefix, index;
    if (block_key(name, prefix, index)) blocks[prefix][index].add(name, shape);
  }
  f.params = total.params;
  f.bytes_bf16 = total.bf16;
  f.bytes_fp8 = total.fp8;
  for (const auto& [prefix, members] : blocks) {
    if (members.size() < 2) continue;  // a numbered key seen once is not a stack of blocks
    BlockFigures b;
    b.prefix = prefix;
    b.count = static_cast<int64_t>(members.size());
    for (const auto& [index, s] : members)
      if (s.params > b.params) b.params = s.params, b.bytes_bf16 = s.bf16, b.bytes_fp8 = s.fp8;
    f.blocks.push_back(b);
  }
  return f;
}

// --- Activations --------------------------------------------------------------------------------

namespace {

struct ProbeState {
  int depth = 0;
  int64_t ops = 0;
  LargestTensor largest;
};
thread_local ProbeState* tls_probe = nullptr;

// The storages of a top-level op's inputs (RecordFunction's inputs are valid only here).
struct InputStorages : at::ObserverContext {
  std::vector<const c10::StorageImpl*> impls;
};

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  if (!tls_probe || tls_probe->depth++ != 0) return nullptr;
  auto ctx = std::make_unique<InputStorages>();
  auto add = [&](const at::Tensor& t) {
    if (t.defined() && t.has_storage()) ctx->impls.push_back(t.storage().unsafeGetStorageImpl());
  };
  for (const auto& v : fn.inputs()) {
    if (v.isTensor()) add(v.toTensor());
    else if (v.isTensorList())
      for (const auto& t : v.toTensorVector()) add(t);
  }
  return ctx;
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext* context) {
  ProbeState* p = tls_probe;
  if (!p) return;
  if (--p->depth != 0) return;  // only the ops our code calls, not the ones they call
  ++p->ops;
  // Outputs that share an input's storage (views, in-place and out= results) allocate nothing.
  static const std::vector<const c10::StorageImpl*> none;
  const auto& inputs = context ? static_cast<InputStorages*>(context)->impls : none;
  for (const auto& v : fn.outputs()) {
    std::vector<at::Tensor> ts;
    if (v.isTensor()) ts.push_back(v.toTensor());
    else if (v.isTensorList()) ts = v.toTensorVector();
    for (const auto& t : ts) {
      if (!t.defined() || !t.has_storage()) continue;
      if (std::find(inputs.begin(), inputs.end(), t.storage().unsafeGetStorageImpl()) != inputs.end()) continue;
      const int64_t bytes = static_cast<int64_t>(t.storage().nbytes());
      if (bytes <= p->largest.bytes) continue;
      p->largest.bytes = bytes;
      p->largest.op = fn.name();
      p->largest.shape = t.sizes().vec();
      p->largest.dtype = std::string(c10::toString(t.scalar_type()));
    }
  }
}

}  // namespace

ActivationProbe::ActivationProbe(std::string run) {
  ensure_meta_kernels();
  auto* s = new ProbeState();
  s->largest.run = std::move(run);
  if (tls_probe) throw Error("activation probes do not nest", "plan::ActivationProbe");
  tls_probe = s;
  handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(on_enter, on_exit)
                                           .needsInputs(true)
                                           .needsOutputs(true)
                                           .scopes({at::RecordScope::FUNCTION}));
}

ActivationProbe::~ActivationProbe() {
  at::removeCallback(handle_);
  delete tls_probe;
  tls_probe = nullptr;
}

LargestTensor ActivationProbe::largest() const { return tls_probe->largest; }
int64_t ActivationProbe::ops() const { return tls_probe->ops; }

// --- Reports ------------------------------------------------------------------------------------

std::string to_json(const ComponentPlan& c) {
  nlohmann::json blocks = nlohmann::json::array();
  for (const auto& b : c.weights.blocks)
    blocks.push_back({{"prefix", b.prefix}, {"count", b.count}, {"params", b.params},
                      {"bytes_bf16", b.bytes_bf16}, {"bytes_fp8", b.bytes_fp8}});
  nlohmann::json j = {{"component", c.name},
                      {"source", c.source},
                      {"ok", c.ok()},
                      {"tensors", c.weights.tensors},
                      {"params", c.weights.params},
                      {"bytes_bf16", c.weights.bytes_bf16},
                      {"bytes_fp8", c.weights.bytes_fp8},
                      {"blocks", blocks},
                      {"largest_activation",
                       {{"bytes", c.largest_activation.bytes},
                        {"op", c.largest_activation.op},
                        {"shape", c.largest_activation.shape},
                        {"dtype", c.largest_activation.dtype},
                        {"run", c.largest_activation.run}}},
                      {"runs", c.runs}};
  if (c.kv_cache_bytes) j["kv_cache_bytes"] = c.kv_cache_bytes;
  bool sent = false;
  for (const auto& t : c.traffic) sent = sent || t.calls;
  if (sent) {
    nlohmann::json t = nlohmann::json::array();
    for (const auto& x : c.traffic) t.push_back({{"calls", x.calls}, {"bytes", x.bytes}});
    j["traffic_per_rank"] = t;
  }
  if (!c.ok()) j["error"] = c.error;
  return j.dump();
}

namespace {
std::string gib(int64_t bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(bytes >= (int64_t(1) << 30) ? 2 : 3) << bytes / double(int64_t(1) << 30);
  return s.str();
}
}  // namespace

std::string traffic_table(const std::vector<ComponentPlan>& plans, const Parallel& par) {
  const ParallelOptions& o = par.options();
  const int world = par.world_size(), inner = world / o.cfg;
  char line[512];
  std::snprintf(line, sizeof line, "communication of rank %d of %d (%d CFG x %d inner; sequence parallel %s, tensor parallel %s):\n",
                par.rank(), world, o.cfg, inner, par.sequence_group() ? "on" : "off", par.tensor_group() ? "on" : "off");
  std::string out = line;
  bool any = false;
  for (const auto& c : plans)
    for (size_t i = 0; i < c.traffic.size() && i < c.runs.size(); ++i) {
      const Traffic& t = c.traffic[i];
      if (!t.calls) continue;
      any = true;
      std::snprintf(line, sizeof line, "  %-22s %-62s %6lld calls %10.1f MiB %8.2f ms at 450 GB/s %8.1f ms at 25 GB/s\n",
                    c.name.c_str(), c.runs[i].c_str(), static_cast<long long>(t.calls), t.bytes / double(1 << 20),
                    t.bytes / 450e9 * 1e3, t.bytes / 25e9 * 1e3);
      out += line;
    }
  if (!any) out += "  none: nothing in this request splits over these ranks with these options\n";
  return out;
}

std::string to_table(const std::vector<ComponentPlan>& plans) {
  std::ostringstream s;
  s << std::left << std::setw(22) << "component" << std::right << std::setw(15) << "params" << std::setw(10)
    << "bf16 GiB" << std::setw(10) << "fp8 GiB" << std::setw(12) << "block GiB" << std::setw(12) << "act GiB"
    << "  largest activation\n";
  for (const auto& c : plans) {
    int64_t block = 0;
    for (const auto& b : c.weights.blocks) block = std::max(block, b.bytes_bf16);
    s << std::left << std::setw(22) << c.name << std::right << std::setw(15) << c.weights.params << std::setw(10)
      << gib(c.weights.bytes_bf16) << std::setw(10) << gib(c.weights.bytes_fp8) << std::setw(12)
      << (block ? gib(block) : "-") << std::setw(12) << gib(c.largest_activation.bytes) << "  ";
    if (!c.ok()) {
      s << "FAILED: " << c.error << "\n";
      continue;
    }
    s << c.largest_activation.op << " " << shape_str(c.largest_activation.shape) << " "
      << c.largest_activation.dtype << " (" << c.largest_activation.run << ")";
    if (c.kv_cache_bytes) s << "; KV cache " << gib(c.kv_cache_bytes) << " GiB";
    s << "\n";
  }
  return s.str();
}

}  // namespace omniflux::plan
