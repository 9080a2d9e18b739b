// Peak device memory per offload mode from the dry-run figures (omniflux/plan.h, estimate_offload).
#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "omniflux/error.h"
#include "nn/block_stack.h"
#include "omniflux/plan.h"

namespace omniflux::plan {

namespace {

// The components nn::BlockStack streams under sequential offload (their block prefixes).
bool streams(const std::string& name) {
  return name == "flux_dit" || name == "uniworld_dit" || name == "xomni_dit" || name == "qwen2_5_vl_lm" ||
         name == "xomni_lm";
}

int64_t weight_bytes(const WeightFigures& w, const std::string& format) {
  if (format == "bf16") return w.bytes_bf16;
  if (format == "fp32") return 2 * w.bytes_bf16;
  if (format == "fp8" || format == "int8") return w.bytes_fp8;
  throw Error("unknown weight format", "plan::estimate_offload", "fp32, bf16, fp8 or int8", format);
}
int64_t block_bytes(const BlockFigures& b, const std::string& format) {
  if (format == "bf16") return b.bytes_bf16;
  if (format == "fp32") return 2 * b.bytes_bf16;
  return b.bytes_fp8;
}

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

int64_t OffloadEstimate::peak(Offload mode) const {
  switch (mode) {
    case Offload::None: return peak_none;
    case Offload::Model: return peak_model;
    case Offload::Sequential: return peak_sequential;
  }
  return peak_none;
}

OffloadEstimate estimate_offload(const std::vector<ComponentPlan>& plans, const std::string& weights,
                                 int64_t reserve_bytes) {
  OffloadEstimate e;
  e.weights = weights;
  e.reserve_bytes = reserve_bytes;
  const int64_t act_scale = weights == "fp32" ? 2 : 1;  // the dry runs measure bf16 activations
  int64_t all_weights = 0, extra_max = 0;
  for (const auto& p : plans) {
    if (!p.ok()) throw Error("the dry run of a component failed", p.name, "a finished dry run", p.error);
    OffloadEstimate::Component c;
    c.name = p.name;
    c.weight_bytes = weight_bytes(p.weights, weights);
    const int64_t tp = std::max<int64_t>(1, p.tensor_parallel);
    if (tp > 1) {  // each rank holds 1/tp of every block (heads and MLP columns; norms are negligible)
      for (const auto& b : p.weights.blocks)
        c.weight_bytes -= b.count * (block_bytes(b, weights) - (block_bytes(b, weights) + tp - 1) / tp);
    }
    const int64_t extra = 2 * act_scale * p.largest_activation.bytes + p.kv_cache_bytes;
    c.working_bytes = c.weight_bytes + extra;
    c.streams = streams(p.name) && !p.weights.blocks.empty();
    c.streamed_bytes = c.weight_bytes;
    if (c.streams) {
      int64_t in_blocks = 0, largest = 0;
      for (const auto& b : p.weights.blocks) {
        in_blocks += b.count * ((block_bytes(b, weights) + tp - 1) / tp);
        largest = std::max(largest, (block_bytes(b, weights) + tp - 1) / tp);
      }
      // Streamed blocks go through fixed device slots the size of the largest block.
      c.streamed_bytes = std::max<int64_t>(0, c.weight_bytes - in_blocks) + nn::kStreamedBlocksOnDevice * largest;
    }
    all_weights += c.weight_bytes;
    extra_max = std::max(extra_max, extra);
    const int64_t seq = c.streamed_bytes + extra;
    if (c.working_bytes > e.peak_model) {
      e.peak_model = c.working_bytes;
      e.peak_model_at = c.name;
    }
    if (seq > e.peak_sequential) {
      e.peak_sequential = seq;
      e.peak_sequential_at = c.name;
    }
    e.components.push_back(c);
  }
  e.peak_none = all_weights + extra_max + reserve_bytes;
  e.peak_model += reserve_bytes;
  e.peak_sequential += reserve_bytes;
  return e;
}

std::string placement_of(const std::string& component) {
  static const std::vector<std::pair<std::string, std::string>> table = {
      {"clip_text", "text"}, {"t5_encoder", "text"}, {"flux_dit", "dit"}, {"uniworld_dit", "dit"},
      {"xomni_dit", "dit"}, {"flux_vae", "vae"}, {"qwen2_5_vl_vision", "vlm"}, {"qwen2_5_vl_lm", "vlm"},
      {"uniworld_connectors", "vlm"}, {"siglip_vision", "siglip"}, {"xomni_lm", "lm"},
      {"siglip_vq_vit", "vq"}, {"siglip_vq_projector", "vq"}};
  for (const auto& [c, p] : table)
    if (c == component) return p;
  throw Error("a dry-run component without a placement name", "plan::placement_of", "a known component", component);
}

std::string placement_table(const std::vector<ComponentPlan>& plans, const RuntimeOptions& rt,
                            const std::vector<std::string>& formats, double max_vram_gb) {
  // Devices in first-use order, each with its components' indices.
  std::vector<std::pair<std::string, std::vector<size_t>>> devices;
  for (size_t i = 0; i < plans.size(); ++i) {
    const std::string d = rt.on(placement_of(plans[i].name)).device;
    auto it = std::find_if(devices.begin(), devices.end(), [&](const auto& e) { return e.first == d; });
    if (it == devices.end()) devices.push_back({d, {i}});
    else it->second.push_back(i);
  }
  const double budget = max_vram_gb * 1024.0 * 1024.0 * 1024.0;
  std::ostringstream s;
  s << "peak memory per device with this placement, offload none (GiB, incl. " << gib(kDefaultReserveBytes)
    << " per device for the CUDA context and workspaces)";
  if (max_vram_gb > 0) s << "; fits --max-vram " << max_vram_gb << " GiB?";
  s << "\n" << std::left << std::setw(12) << "device";
  for (const auto& f : formats) s << std::right << std::setw(16) << f;
  s << "  components\n";
  for (const auto& [device, idx] : devices) {
    s << std::left << std::setw(12) << device;
    for (const auto& f : formats) {
      std::vector<ComponentPlan> mine;
      for (size_t i : idx) mine.push_back(plans[i]);
      const int64_t peak = estimate_offload(mine, f).peak(Offload::None);
      std::string cell = gib(peak);
      if (max_vram_gb > 0) cell += static_cast<double>(peak) <= budget ? " yes" : " no ";
      s << std::right << std::setw(16) << cell;
    }
    s << " ";
    for (size_t i : idx) s << " " << plans[i].name;
    s << "\n";
  }
  return s.str();
}

std::string offload_table(const std::vector<ComponentPlan>& plans, const std::vector<std::string>& formats,
                          double max_vram_gb) {
  std::vector<OffloadEstimate> est;
  for (const auto& f : formats) est.push_back(estimate_offload(plans, f));
  std::ostringstream s;
  s << "weights and working set (GiB) per component:\n" << std::left << std::setw(22) << "component";
  for (const auto& e : est) s << std::right << std::setw(10) << e.weights << std::setw(10) << "working";
  s << "\n";
  for (size_t i = 0; i < plans.size(); ++i) {
    s << std::left << std::setw(22) << plans[i].name;
    for (const auto& e : est)
      s << std::right << std::setw(10) << gib(e.components[i].weight_bytes) << std::setw(10)
        << gib(e.components[i].working_bytes);
    s << "\n";
  }
  const double budget = max_vram_gb * 1024.0 * 1024.0 * 1024.0;  // GPU memory is sized in GiB
  s << "peak device memory (GiB, incl. " << gib(kDefaultReserveBytes) << " for the CUDA context and workspaces)";
  if (max_vram_gb > 0) s << "; fits --max-vram " << max_vram_gb << " GiB?";
  s << "\n" << std::left << std::setw(22) << "offload";
  for (const auto& e : est) s << std::right << std::setw(16) << e.weights;
  s << "\n";
  for (Offload mode : {Offload::None, Offload::Model, Offload::Sequential}) {
    s << std::left << std::setw(22) << offload_name(mode);
    for (const auto& e : est) {
      std::string cell = gib(e.peak(mode));
      if (max_vram_gb > 0) cell += static_cast<double>(e.peak(mode)) <= budget ? " yes" : " no ";
      s << std::right << std::setw(16) << cell;
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace omniflux::plan
