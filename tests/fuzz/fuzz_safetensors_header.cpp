// libFuzzer target for the safetensors header parser (scripts/fuzz.sh builds and runs it).
// Any input must either parse into entries that lie inside the buffer, or throw omniflux::Error.
// Anything else (a crash, a sanitizer report, another exception type) is a bug.
#include <cstdint>
#include <cstdlib>

#include "omniflux/error.h"
#include "omniflux/io/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    omniflux::SafetensorsHeader h = omniflux::parse_safetensors_header(data, size, "fuzz");
    uint64_t cursor = 0;
    for (const auto& t : h.tensors) {
      uint64_t n = 1;
      for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
      if (t.begin != cursor || t.end < t.begin || h.data_offset + t.end > size ||
          n * omniflux::dtype_size(t.dtype) != t.end - t.begin)
        std::abort();
      cursor = t.end;
    }
    if (h.data_offset + cursor != size) std::abort();
  } catch (const omniflux::Error&) {
  }
  return 0;
}
