#pragma once
// The torch-free half of reading torch.save files (io/torch_pickle.h): the zip archive and
// the pickle machine, down to a list of tensor records (storage, dtype, offset, sizes, strides)
// whose views are checked to lie inside their storages. torch_pickle.cpp turns the records into
// tensors; tests/fuzz/fuzz_torch_archive.cpp fuzzes this half without LibTorch.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace omniflux::torch_archive {

struct ZipEntry {
  size_t offset = 0, size = 0;  // of the stored data within the archive bytes
};

// The stored (uncompressed) entries of a zip archive, their CRC-32 checked; Error otherwise.
std::map<std::string, ZipEntry> zip_entries(const std::string& bytes, const std::string& where);

// The storage classes torch.save names (torch.FloatStorage, ...), as the engine's dtypes.
enum class Dtype { Float, Double, Half, BFloat16, Long, Int, Short, Char, Byte, Bool };
size_t element_size(Dtype d);

struct TensorRecord {
  std::string storage;  // the archive entry of its bytes ("<prefix>data/<key>")
  Dtype dtype = Dtype::Float;
  int64_t storage_numel = 0;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};

// A flat {name: tensor} state dict: every tensor's storage entry exists with the size its dtype and
// element count need, and every view lies inside its storage.
struct StateDict {
  std::map<std::string, ZipEntry> entries;
  std::vector<std::pair<std::string, TensorRecord>> tensors;  // in pickle order
};
StateDict read_state_dict(const std::string& bytes, const std::string& where);

}  // namespace omniflux::torch_archive
