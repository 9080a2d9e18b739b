// libFuzzer target for reading torch.save files (src/io/torch_archive.cpp: the zip archive and the
// pickle machine, without LibTorch), as load_torch_state_dict reads the connector checkpoints.
// Invariants: any input gives records or an omniflux::Error; every record's storage entry lies
// inside the file and holds storage_numel elements; every non-empty view lies inside its storage.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/torch_archive.h"
#include "omniflux/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace omniflux::torch_archive;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const StateDict sd = read_state_dict(bytes, "fuzz");
    for (const auto& [name, r] : sd.tensors) {
      const auto e = sd.entries.find(r.storage);
      if (e == sd.entries.end() || e->second.offset > bytes.size() || e->second.size > bytes.size() - e->second.offset ||
          e->second.size != static_cast<size_t>(r.storage_numel) * element_size(r.dtype) || r.size.size() != r.stride.size())
        std::abort();
      bool empty = false;
      __int128 last = r.offset;
      for (size_t k = 0; k < r.size.size(); ++k) {
        if (r.size[k] == 0) empty = true;
        last += static_cast<__int128>(r.size[k] - 1) * r.stride[k];
      }
      if (!empty && (r.offset < 0 || last >= r.storage_numel)) std::abort();
    }
  } catch (const omniflux::Error&) {
  }
  return 0;
}
