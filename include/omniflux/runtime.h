#pragma once
// Where and in what precision models run. Defaults: fp32 on CPU, bf16 on CUDA.
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace omniflux {

struct RuntimeOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:1"
  std::string dtype = "auto";  // "auto", "float32", "bfloat16", "float16"
  int num_threads = 0;         // CPU intra-op threads; 0 = all hardware threads

  c10::Device torch_device() const;
  // The floating-point dtype weights and activations use: "auto" is fp32 on CPU, bf16 on CUDA.
  c10::ScalarType compute_dtype() const;
};

// Parses "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16"; throws Error otherwise.
c10::ScalarType parse_dtype(const std::string& name);

// Sets LibTorch's CPU intra-op threads (n <= 0: all hardware threads). Debian's LibTorch
// otherwise runs on one thread.
void set_num_threads(int n);

}  // namespace omniflux
