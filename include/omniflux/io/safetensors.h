#pragma once
// safetensors: memory-mapped reading (single files and sharded checkpoints) and writing.
// Every malformed file is an omniflux::Error naming the file and, where it applies, the tensor.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "omniflux/io/safetensors_format.h"

namespace omniflux {

// The LibTorch scalar type that holds the dtype (F8 as Float8_e4m3fn / Float8_e5m2).
// f8_to_float() also decodes raw F8 bits held in a uint8 tensor.
c10::ScalarType dtype_to_scalar_type(Dtype d);
Dtype scalar_type_to_dtype(c10::ScalarType t);
// Decodes raw F8 bits (uint8 tensor) to float32.
at::Tensor f8_to_float(const at::Tensor& bits, Dtype d);

class MappedFile;  // read-only memory map, shared by every tensor that views it

// One .safetensors file, validated on open like the reference implementation does.
class SafetensorsFile {
 public:
  // Maps and validates the file. Throws Error on any problem.
  static SafetensorsFile open(const std::string& path);
  // Validates an in-memory buffer (the fuzzer and the tests use it). `name` appears in errors.
  // The buffer must outlive the returned object.
  static SafetensorsFile from_buffer(const uint8_t* data, size_t size, const std::string& name);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // sorted by offset
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws Error if absent
  // CPU tensor viewing the mapping (no copy) when the data is aligned for its dtype, else a copy.
  // F8 tensors come back as float8 tensors.
  at::Tensor get(const std::string& name) const;
  // Pointer to the raw bytes of a tensor inside the mapping.
  const uint8_t* data(const TensorInfo& info) const;
  // Returns the resident pages that lie wholly inside the tensor to the OS (madvise DONTNEED);
  // views of them stay valid and read the file again when touched.
  void drop_pages(const TensorInfo& info) const;
  uint64_t file_size() const { return size_; }

 private:
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  const uint8_t* base_ = nullptr;  // start of the data region
  uint64_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: one file, or a folder/index of shards (`*.safetensors.index.json`).
class Checkpoint {
 public:
  // `path` is a .safetensors file, a .safetensors.index.json file, or a folder holding exactly one
  // index file, or else `model.safetensors` / `diffusion_pytorch_model.safetensors`, or else
  // exactly one .safetensors file. PyTorch pickles (torch.save zip files) are read the same way: a
  // .bin / .pt / .pth file, a pytorch_model.bin.index.json, or a folder holding pytorch_model.bin /
  // diffusion_pytorch_model.bin when it has no safetensors; their tensors are held in memory. The
  // shards an index names must resolve inside its folder (symlinks included) unless
  // `allow_outside_paths`.
  static Checkpoint open(const std::string& path, bool allow_outside_paths = false);
  // A checkpoint held in memory (random-weight benchmarks, converted models): the tensors are
  // served as they are; `name` stands for the path in messages.
  static Checkpoint from_tensors(std::map<std::string, at::Tensor> tensors, const std::string& name);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) != 0 || memory_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;  // throws for in-memory tensors
  // The file holding a tensor, or the checkpoint's name for in-memory ones (for messages).
  std::string source_of(const std::string& name) const;
  at::Tensor get(const std::string& name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // Gives a file-backed tensor's pages back to the OS (SafetensorsFile::drop_pages); no-op otherwise.
  void drop_pages(const std::string& name) const;
  // Metadata of the first file (the converter stores the config there).
  const std::map<std::string, std::string>& metadata() const;

 private:
  std::string path_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
  std::map<std::string, at::Tensor> memory_;  // from_tensors, or read from pickles
  std::map<std::string, TensorInfo> memory_info_;
  std::map<std::string, std::string> memory_source_;  // tensor -> pickle file it came from
  void add_pickle(const std::string& file);
};

// Writing. Tensors are written in the given order, contiguous, in their own dtype (an F8
// dtype can be forced for raw uint8 bits through `dtype_override`). A tensor on the meta device
// has no data: its bytes are left as a hole, so a file of meta tensors is a header-only, sparse
// stand-in of a checkpoint (it reads as zeros; omniflux-plan's dry runs never read it).
struct TensorToWrite {
  std::string name;
  at::Tensor tensor;
  bool has_dtype_override = false;
  Dtype dtype_override = Dtype::U8;
};
void save_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Tensors made one at a time while writing (converting a checkpoint larger than memory): the
// header comes from `dtype` and `shape`, and `make()` must return exactly that.
struct LazyTensorToWrite {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  std::function<at::Tensor()> make;
};
void save_safetensors_lazy(const std::string& path, const std::vector<LazyTensorToWrite>& tensors,
                           const std::map<std::string, std::string>& metadata = {});
// Convenience overload: name -> tensor, written in name order.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace omniflux
