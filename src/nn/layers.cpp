#include "nn/layers.h"

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/ops.h"
#include "nn/quant.h"

namespace omniflux::nn {

at::Tensor cpu_gemv_layout(const at::Tensor& w) {
  if (!w.defined() || w.dim() != 2 || !w.device().is_cpu() || !at::isFloatingType(w.scalar_type()) ||
      w.size(0) <= w.size(1))
    return w;
  return w.t().contiguous().t();
}

Linear Linear::load(const WeightView& w, const std::string& name, int64_t in, int64_t out, bool bias,
                    c10::ScalarType dtype) {
  Linear l;
  if (w.contains(name + ".weight_scale")) {
    auto q = w.get_quantized(name + ".weight", {out, in});
    l.weight = q.codes;
    l.weight_scale = q.scale;
  } else {
    l.weight = w.get(name + ".weight", {out, in}, dtype);
  }
  if (bias) l.bias = w.get(name + ".bias", {out});
  return l;
}

Linear Linear::fuse(const std::vector<Linear>& parts) {
  if (parts.empty()) throw Error("nothing to fuse", "nn::Linear::fuse");
  Linear f;
  std::vector<at::Tensor> ws, bs, ss;
  for (const auto& p : parts) {
    if (p.quantized() != parts[0].quantized() || p.weight.scalar_type() != parts[0].weight.scalar_type())
      throw Error("fused projections are stored differently", "nn::Linear::fuse",
                  "all quantised alike or all plain", std::string(c10::toString(p.weight.scalar_type())) + " and " +
                                                           std::string(c10::toString(parts[0].weight.scalar_type())));
    if (p.bias.defined() != parts[0].bias.defined())
      throw Error("fused projections must all have a bias or none", "nn::Linear::fuse");
    ws.push_back(p.weight);
    if (p.bias.defined()) bs.push_back(p.bias);
    if (p.quantized()) ss.push_back(p.weight_scale);
  }
  f.weight = at::cat(ws, 0);
  if (!bs.empty()) f.bias = at::cat(bs, 0);
  if (!ss.empty()) f.weight_scale = at::cat(ss, 0);
  return f;
}

void Linear::prefer_decode_layout(const WeightStore& store) {
  if (!quantized() && store.runtime().offload != Offload::Sequential) weight = cpu_gemv_layout(weight);
}

at::Tensor Linear::operator()(const at::Tensor& x) const {
  return quantized() ? quantized_linear(x, weight, weight_scale, bias) : linear(x, weight, bias);
}

Conv2d Conv2d::load(const WeightView& w, const std::string& name, int64_t in, int64_t out, int64_t kernel,
                    int64_t stride, int64_t padding) {
  Conv2d c;
  c.weight = w.get(name + ".weight", {out, in, kernel, kernel});
  c.bias = w.get(name + ".bias", {out});
  c.stride = stride;
  c.padding = padding;
  return c;
}

at::Tensor Conv2d::operator()(const at::Tensor& x) const {
  if (x.dim() != 4 || x.size(1) != weight.size(1))
    throw Error("conv2d input has the wrong shape", "nn::Conv2d",
                "[B, " + std::to_string(weight.size(1)) + ", H, W]", shape_str(x.sizes().vec()));
  return at::conv2d(x, weight, bias, {stride, stride}, {padding, padding});
}

LayerNorm LayerNorm::load(const WeightView& w, const std::string& name, int64_t dim, double eps) {
  LayerNorm n;
  n.weight = w.get(name + ".weight", {dim});
  n.bias = w.get(name + ".bias", {dim});
  n.eps = eps;
  return n;
}

at::Tensor LayerNorm::operator()(const at::Tensor& x) const { return layer_norm(x, weight, bias, eps); }

GroupNorm GroupNorm::load(const WeightView& w, const std::string& name, int64_t channels, int64_t groups,
                          double eps) {
  if (groups <= 0 || channels % groups != 0)
    throw Error("channels not divisible by the group count", w.key(name), "a divisor of " + std::to_string(channels),
                std::to_string(groups));
  GroupNorm n;
  n.weight = w.get(name + ".weight", {channels});
  n.bias = w.get(name + ".bias", {channels});
  n.groups = groups;
  n.eps = eps;
  return n;
}

at::Tensor GroupNorm::operator()(const at::Tensor& x) const { return group_norm(x, groups, weight, bias, eps); }

Linear Linear::slice(int64_t dim, int64_t begin, int64_t n) const {
  if (dim != 0 && dim != 1)
    throw Error("a Linear slices by rows (0) or columns (1)", "nn::Linear::slice", "0 or 1", std::to_string(dim));
  if (dim == 1 && bias.defined())
    throw Error("a column slice of a layer with a bias", "nn::Linear::slice", "a layer without a bias", "a bias");
  Linear l = *this;
  l.weight = weight.narrow(dim, begin, n).contiguous();
  if (dim == 0) {
    if (bias.defined()) l.bias = bias.narrow(0, begin, n).contiguous();
    if (weight_scale.defined()) l.weight_scale = weight_scale.narrow(0, begin, n).contiguous();
  }
  return l;
}

void Linear::to(c10::Device device) {
  for_each_tensor([&](at::Tensor& t) {
    if (t.defined()) t = t.to(device);
  });
}

}  // namespace omniflux::nn
