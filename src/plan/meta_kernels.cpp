// Meta kernels for the ops LibTorch's C++ build lacks them for. (Python's torch registers many meta
// kernels from torch/_meta_registrations.py at import; a C++ program gets only the ATen ones.)
// They compute output shapes and dtypes only, and are registered on first use by the dry runs, so a
// program that never plans is unaffected.
#include "plan/meta_kernels.h"

#include "omniflux/plan.h"

#include <mutex>

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

namespace omniflux::plan {

namespace {

using Stack = torch::jit::Stack;

at::TensorOptions meta(at::ScalarType t) { return at::TensorOptions().device(at::kMeta).dtype(t); }

// The arguments of the op on top of `stack`, popped.
std::vector<c10::IValue> pop_args(const c10::OperatorHandle& op, Stack* stack) {
  const size_t n = op.schema().arguments().size();
  std::vector<c10::IValue> args(stack->end() - n, stack->end());
  torch::jit::drop(*stack, n);
  return args;
}

std::vector<int64_t> ints(const c10::IValue& v) {
  if (v.isIntList()) return v.toIntVector();
  std::vector<int64_t> out;
  for (const auto& s : v.toSymIntVector()) out.push_back(s.expect_int());
  return out;
}

int64_t int_of(const c10::IValue& v) { return v.isInt() ? v.toInt() : v.toSymInt().expect_int(); }

// where.self(condition, self, other), where.self_out(..., out)
void where_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  const at::Tensor &c = a[0].toTensor(), &x = a[1].toTensor(), &y = a[2].toTensor();
  auto shape = at::infer_size(at::infer_size(c.sizes(), x.sizes()), y.sizes());
  if (a.size() == 4) {
    at::Tensor out = a[3].toTensor();
    out.resize_(shape);
    stack->emplace_back(out);
  } else {
    stack->emplace_back(at::empty(shape, meta(at::result_type(x, y))));
  }
}

// logical_and / logical_or (and their .out): broadcast, bool
void logical_binary_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  auto shape = at::infer_size(a[0].toTensor().sizes(), a[1].toTensor().sizes());
  if (a.size() == 3) {
    at::Tensor out = a[2].toTensor();
    out.resize_(shape);
    stack->emplace_back(out);
  } else {
    stack->emplace_back(at::empty(shape, meta(at::kBool)));
  }
}

// index_select(self, dim, index)
void index_select_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  const at::Tensor& self = a[0].toTensor();
  const int64_t dim = at::maybe_wrap_dim(a[1].toInt(), std::max<int64_t>(self.dim(), 1));
  auto shape = self.sizes().vec();
  if (!shape.empty()) shape[dim] = a[2].toTensor().numel();
  stack->emplace_back(at::empty(shape, meta(self.scalar_type())));
}

// native_layer_norm(input, normalized_shape, weight, bias, eps) -> (out, mean, rstd)
void native_layer_norm_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  const at::Tensor& x = a[0].toTensor();
  const int64_t axis = x.dim() - static_cast<int64_t>(ints(a[1]).size());
  std::vector<int64_t> stat(x.sizes().begin(), x.sizes().begin() + axis);
  stat.resize(x.dim(), 1);
  const auto acc = at::toOpMathType(x.scalar_type());
  stack->emplace_back(at::empty(x.sizes(), meta(x.scalar_type())));
  stack->emplace_back(at::empty(stat, meta(acc)));
  stack->emplace_back(at::empty(stat, meta(acc)));
}

// native_group_norm(input, weight, bias, N, C, HxW, group, eps) -> (out, mean [N, G], rstd [N, G])
void native_group_norm_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  const at::Tensor& x = a[0].toTensor();
  const int64_t n = int_of(a[3]), g = a[6].toInt();
  const auto acc = at::toOpMathType(x.scalar_type());
  stack->emplace_back(at::empty(x.sizes(), meta(x.scalar_type())));
  stack->emplace_back(at::empty({n, g}, meta(acc)));
  stack->emplace_back(at::empty({n, g}, meta(acc)));
}

// convolution_overrideable(input, weight, bias, stride, padding, dilation, transposed,
// output_padding, groups): [N, C_out, spatial...]
void convolution_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  const at::Tensor &x = a[0].toTensor(), &w = a[1].toTensor();
  const auto stride = ints(a[3]), padding = ints(a[4]), dilation = ints(a[5]), out_pad = ints(a[7]);
  const bool transposed = a[6].toBool();
  const int64_t groups = int_of(a[8]);
  const int64_t spatial = x.dim() - 2;
  auto pick = [&](const std::vector<int64_t>& v, int64_t i) { return v.size() == 1 ? v[0] : v[i]; };
  std::vector<int64_t> shape = {x.size(0), transposed ? w.size(1) * groups : w.size(0)};
  for (int64_t i = 0; i < spatial; ++i) {
    const int64_t in = x.size(2 + i), k = w.size(2 + i), s = pick(stride, i), p = pick(padding, i),
                  d = pick(dilation, i);
    shape.push_back(transposed ? (in - 1) * s - 2 * p + d * (k - 1) + (out_pad.empty() ? 0 : pick(out_pad, i)) + 1
                               : (in + 2 * p - d * (k - 1) - 1) / s + 1);
  }
  stack->emplace_back(at::empty(shape, meta(x.scalar_type())));
}

// flip(self, dims), abs(self): same shape and dtype; abs.out(self, out) resizes out.
void same_shape_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  const at::Tensor& x = a[0].toTensor();
  const auto& args = op.schema().arguments();
  if (!args.empty() && args.back().name() == "out") {
    at::Tensor out = a.back().toTensor();
    out.resize_(x.sizes());
    stack->emplace_back(out);
  } else {
    stack->emplace_back(at::empty(x.sizes(), meta(x.scalar_type())));
  }
}

// multinomial(self [.., K], num_samples, replacement, generator) -> int64 [.., num_samples]
void multinomial_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  auto shape = a[0].toTensor().sizes().vec();
  shape.back() = int_of(a[1]);
  stack->emplace_back(at::empty(shape, meta(at::kLong)));
}

// grid_sampler_2d(input [N, C, H, W], grid [N, Ho, Wo, 2], ...) -> [N, C, Ho, Wo]
void grid_sampler_kernel(const c10::OperatorHandle& op, Stack* stack) {
  auto a = pop_args(op, stack);
  const at::Tensor &x = a[0].toTensor(), &g = a[1].toTensor();
  stack->emplace_back(at::empty({x.size(0), x.size(1), g.size(1), g.size(2)}, meta(x.scalar_type())));
}

template <void (*F)(const c10::OperatorHandle&, Stack*)>
torch::CppFunction boxed() {
  return torch::CppFunction::makeFromBoxedFunction<F>();
}

}  // namespace

const std::vector<std::string>& supplied_meta_kernels() {
  static const std::vector<std::string> names = {
      "where.self",        "where.self_out",    "logical_and",  "logical_and.out",          "logical_or",
      "logical_or.out",    "index_select",      "native_layer_norm", "native_group_norm", "convolution_overrideable",
      "flip",              "abs",               "abs.out",      "multinomial",              "grid_sampler_2d"};
  return names;
}

void ensure_meta_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Kept for the life of the process: the registrations end with the Library object.
    static auto* lib = new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::Meta, __FILE__, __LINE__);
    lib->impl("where.self", boxed<where_kernel>());
    lib->impl("where.self_out", boxed<where_kernel>());
    lib->impl("logical_and", boxed<logical_binary_kernel>());
    lib->impl("logical_and.out", boxed<logical_binary_kernel>());
    lib->impl("logical_or", boxed<logical_binary_kernel>());
    lib->impl("logical_or.out", boxed<logical_binary_kernel>());
    lib->impl("index_select", boxed<index_select_kernel>());
    lib->impl("native_layer_norm", boxed<native_layer_norm_kernel>());
    lib->impl("native_group_norm", boxed<native_group_norm_kernel>());
    lib->impl("convolution_overrideable", boxed<convolution_kernel>());
    lib->impl("flip", boxed<same_shape_kernel>());
    lib->impl("abs", boxed<same_shape_kernel>());
    lib->impl("abs.out", boxed<same_shape_kernel>());
    lib->impl("multinomial", boxed<multinomial_kernel>());
    lib->impl("grid_sampler_2d", boxed<grid_sampler_kernel>());
  });
}

}  // namespace omniflux::plan
