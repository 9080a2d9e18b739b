#pragma once
// The safetensors format itself, free of LibTorch: dtypes, tensor entries, and the validating header
// parser (the fuzzer links only this part).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace omniflux {

enum class Dtype { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(Dtype d);  // "F32", ...
size_t dtype_size(Dtype d);       // bytes per element
// Parses a safetensors dtype string; false if it is not one of the supported ones.
bool parse_safetensors_dtype(const std::string& s, Dtype* out);

struct TensorInfo {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets inside the data region
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;
  std::vector<TensorInfo> tensors;  // sorted by offset
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // where the data region starts in the file (8 + header length)
};

// Validates a whole file image (header and data region sizes) like the reference implementation
// does. Throws omniflux::Error naming `name` (and the tensor) on any violation.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& name);

}  // namespace omniflux
