// safetensors files on LibTorch: memory-mapped reading, sharded checkpoints, and writing. The header
// validation itself lives in safetensors_header.cpp.
#include "omniflux/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "io/paths.h"
#include "io/torch_pickle.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace omniflux {

// ---------------------------------------------------------------------------------------------
// dtypes

c10::ScalarType dtype_to_scalar_type(Dtype d) {
  switch (d) {
    case Dtype::F64: return c10::kDouble;
    case Dtype::F32: return c10::kFloat;
    case Dtype::F16: return c10::kHalf;
    case Dtype::BF16: return c10::kBFloat16;
    case Dtype::F8_E4M3: return c10::ScalarType::Float8_e4m3fn;
    case Dtype::F8_E5M2: return c10::ScalarType::Float8_e5m2;
    case Dtype::I64: return c10::kLong;
    case Dtype::I32: return c10::kInt;
    case Dtype::I16: return c10::kShort;
    case Dtype::I8: return c10::kChar;
    case Dtype::U8: return c10::kByte;
    case Dtype::BOOL: return c10::kBool;
  }
  return c10::kByte;
}

Dtype scalar_type_to_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::kDouble: return Dtype::F64;
    case c10::kFloat: return Dtype::F32;
    case c10::kHalf: return Dtype::F16;
    case c10::kBFloat16: return Dtype::BF16;
    case c10::kLong: return Dtype::I64;
    case c10::kInt: return Dtype::I32;
    case c10::kShort: return Dtype::I16;
    case c10::kChar: return Dtype::I8;
    case c10::kByte: return Dtype::U8;
    case c10::kBool: return Dtype::BOOL;
    case c10::ScalarType::Float8_e4m3fn: return Dtype::F8_E4M3;
    case c10::ScalarType::Float8_e5m2: return Dtype::F8_E5M2;
    default: break;
  }
  throw Error("dtype cannot be stored in safetensors", "save_safetensors",
              "F64/F32/F16/BF16/F8/I64/I32/I16/I8/U8/BOOL", std::string(c10::toString(t)));
}

namespace {
// Value of every F8 bit pattern. E4M3 is the "fn" variant (no infinities, one NaN per sign),
// E5M2 follows IEEE rules; both as in the OCP FP8 spec that safetensors' F8 names refer to.
std::array<float, 256> make_f8_table(Dtype d) {
  std::array<float, 256> t{};
  const bool e4m3 = d == Dtype::F8_E4M3;
  const int man_bits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15, exp_max = e4m3 ? 15 : 31;
  for (int b = 0; b < 256; ++b) {
    const int sign = b >> 7, exp = (b >> man_bits) & exp_max, man = b & ((1 << man_bits) - 1);
    float v;
    if (exp == 0) {
      v = std::ldexp(static_cast<float>(man), 1 - bias - man_bits);
    } else if (e4m3 && exp == 15 && man == 7) {
      v = std::numeric_limits<float>::quiet_NaN();
    } else if (!e4m3 && exp == 31) {
      v = man == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
    } else {
      v = std::ldexp(1.0f + static_cast<float>(man) / (1 << man_bits), exp - bias);
    }
    t[b] = sign ? -v : v;
  }
  return t;
}
}  // namespace

at::Tensor f8_to_float(const at::Tensor& bits, Dtype d) {
  if (d != Dtype::F8_E4M3 && d != Dtype::F8_E5M2)
    throw Error("not an F8 dtype", "f8_to_float", "F8_E4M3 or F8_E5M2", dtype_name(d));
  if (bits.scalar_type() != c10::kByte) return bits.to(c10::kFloat);  // native float8 (LibTorch 2.x)
  static const std::array<float, 256> e4m3 = make_f8_table(Dtype::F8_E4M3);
  static const std::array<float, 256> e5m2 = make_f8_table(Dtype::F8_E5M2);
  const auto& table = d == Dtype::F8_E4M3 ? e4m3 : e5m2;
  at::Tensor lut = at::from_blob(const_cast<float*>(table.data()), {256}, at::kFloat);
  return lut.to(bits.device()).index({bits.to(c10::kLong)});
}

// ---------------------------------------------------------------------------------------------
// Memory map

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    require_regular_file(path, "weights file");
    // O_NONBLOCK: should the path become a FIFO after the check, open() must not wait for a writer.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) throw Error("cannot open file", path, "a readable file", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error("not a regular file", path);
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
      // PROT_WRITE with MAP_PRIVATE: an in-place op on a zero-copy weight gets private pages
      // instead of a segfault; the file itself is never written. MAP_NORESERVE: no swap is
      // reserved for those copies that never happen, so a file larger than RAM still maps
      // (Linux's default overcommit heuristic refuses a 24 GB private mapping on a 24 GB machine).
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
      if (p == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        throw Error("cannot memory-map file", path, "", std::strerror(e));
      }
      data_ = static_cast<uint8_t*>(p);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

SafetensorsFile SafetensorsFile::from_buffer(const uint8_t* data, size_t size,
                                             const std::string& name) {
  SafetensorsHeader h = parse_safetensors_header(data, size, name);
  SafetensorsFile f;
  f.path_ = name;
  f.base_ = data + h.data_offset;
  f.size_ = size;
  f.tensors_ = std::move(h.tensors);
  f.metadata_ = std::move(h.metadata);
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  return f;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  SafetensorsFile f = from_buffer(map->data(), map->size(), path);
  f.map_ = std::move(map);
  return f;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("tensor not found", path_ + ": " + name);
  return tensors_[it->second];
}

const uint8_t* SafetensorsFile::data(const TensorInfo& info) const { return base_ + info.begin; }

void SafetensorsFile::drop_pages(const TensorInfo& info) const {
  if (!map_) return;  // an in-memory buffer
  // Whole pages inside the tensor only: a neighbour's pages stay (they may be viewed).
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(data(info)), e = b + info.nbytes();
  const uintptr_t lo = (b + page - 1) / page * page, hi = e / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& t = info(name);
  const auto st = dtype_to_scalar_type(t.dtype);
  const uint8_t* p = data(t);
  const size_t esize = dtype_size(t.dtype);
  if (t.nbytes() == 0) return at::empty(t.shape, at::TensorOptions().dtype(st));
  if (reinterpret_cast<uintptr_t>(p) % esize == 0) {
    std::shared_ptr<MappedFile> keep = map_;  // the tensor keeps the mapping alive
    return at::from_blob(const_cast<uint8_t*>(p), t.shape, [keep](void*) {},
                         at::TensorOptions().dtype(st));
  }
  // Misaligned for its dtype (a header length not padded to 8): copy.
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(st));
  std::memcpy(out.data_ptr(), p, t.nbytes());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints (single file or shards)

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string read_text_file(const std::string& path) {
  require_regular_file(path, "shard index file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open file", path, "a readable file", std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string resolve_checkpoint_path(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error("checkpoint path does not exist", path);
  if (!fs::is_directory(path, ec)) return path;
  std::vector<std::string> index, single, pickle_index;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    const std::string f = e.path().filename().string();
    if (ends_with(f, ".safetensors.index.json")) index.push_back(e.path().string());
    else if (ends_with(f, ".safetensors")) single.push_back(e.path().string());
    else if (ends_with(f, ".bin.index.json")) pickle_index.push_back(e.path().string());
  }
  std::sort(index.begin(), index.end());
  std::sort(single.begin(), single.end());
  if (index.size() == 1) return index[0];
  if (index.size() > 1)
    throw Error("several shard index files in folder", path, "one *.safetensors.index.json",
                std::to_string(index.size()));
  for (const char* name : {"model.safetensors", "diffusion_pytorch_model.safetensors"}) {
    fs::path p = fs::path(path) / name;
    if (fs::exists(p, ec)) return p.string();
  }
  if (single.size() == 1) return single[0];
  if (!single.empty())
    throw Error("several safetensors files and no index in folder", path,
                "model.safetensors, diffusion_pytorch_model.safetensors or an index file",
                std::to_string(single.size()) + " .safetensors files");
  // PyTorch pickles (torch.save zip files), as some releases still ship them.
  if (pickle_index.size() == 1) return pickle_index[0];
  for (const char* name : {"pytorch_model.bin", "diffusion_pytorch_model.bin"}) {
    fs::path p = fs::path(path) / name;
    if (fs::exists(p, ec)) return p.string();
  }
  throw Error("no weights file in folder", path,
              "model.safetensors, diffusion_pytorch_model.safetensors, pytorch_model.bin or an index file",
              "none of them");
}

}  // namespace

static bool is_pickle_path(const std::string& p) {
  return ends_with(p, ".bin") || ends_with(p, ".pt") || ends_with(p, ".pth");
}

void Checkpoint::add_pickle(const std::string& file) {
  for (auto& [key, t] : load_torch_state_dict(file)) {
    if (memory_.count(key) || where_.count(key)) throw Error("tensor appears in two files", file + ": " + key);
    TensorInfo info;
    info.name = key;
    info.dtype = scalar_type_to_dtype(t.scalar_type());
    info.shape = t.sizes().vec();
    info.end = static_cast<uint64_t>(t.numel()) * t.element_size();
    memory_info_[key] = info;
    memory_source_[key] = file;
    memory_[key] = std::move(t);
  }
}

Checkpoint Checkpoint::open(const std::string& input, bool allow_outside_paths) {
  Checkpoint c;
  c.path_ = resolve_checkpoint_path(input);
  if (is_pickle_path(c.path_)) {
    c.add_pickle(c.path_);
    return c;
  }
  if (!ends_with(c.path_, ".index.json")) {
    c.files_.push_back(SafetensorsFile::open(c.path_));
    for (const auto& t : c.files_[0].tensors()) c.where_[t.name] = 0;
    return c;
  }
  // Sharded: weight_map names the shard of every tensor.
  json idx;
  try {
    idx = json::parse(read_text_file(c.path_));
  } catch (const json::parse_error& e) {
    throw Error("shard index is not valid JSON", c.path_, "", e.what());
  }
  if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
    throw Error("shard index has no weight_map object", c.path_);
  const fs::path dir = fs::path(c.path_).parent_path();
  std::map<std::string, size_t> file_slot;
  std::map<std::string, std::string> expected;  // tensor -> shard file name
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      throw Error("shard index entry is not a file name", c.path_ + ": " + it.key());
    const std::string file = it.value().get<std::string>();
    const fs::path rel(file);
    if (!allow_outside_paths && (file.empty() || rel.is_absolute() ||
        std::any_of(rel.begin(), rel.end(), [](const fs::path& p) { return p == ".."; })))
      throw Error("shard file name must be relative to the index folder", c.path_ + ": " + it.key(),
                  "a file name", file);
    expected[it.key()] = file;
    if (!file_slot.count(file)) {
      const fs::path shard = resolve_in_folder(dir.string(), file, c.path_ + ": weight_map." + it.key(), allow_outside_paths);
      std::error_code ec;
      if (!fs::exists(shard, ec))
        throw Error("shard named in the index does not exist", c.path_ + ": " + it.key(),
                    "file " + shard.string(), "missing");
      file_slot[file] = c.files_.size();
      if (is_pickle_path(file)) {
        file_slot[file] = SIZE_MAX;
        c.add_pickle(shard.string());
      } else {
        c.files_.push_back(SafetensorsFile::open(shard.string()));
      }
    }
  }
  // Pickle shards: every tensor where the index says, and nothing unlisted.
  for (const auto& [name, file] : expected) {
    if (file_slot[file] != SIZE_MAX) continue;
    auto src = c.memory_source_.find(name);
    if (src == c.memory_source_.end() || fs::path(src->second).filename() != fs::path(file).filename())
      throw Error("tensor listed in the shard index is missing from its shard", (dir / file).string() + ": " + name);
  }
  for (const auto& [name, src] : c.memory_source_) {
    auto it = expected.find(name);
    if (it == expected.end()) throw Error("tensor in a shard is not listed in the shard index", src + ": " + name);
    if (fs::path(it->second).filename() != fs::path(src).filename())
      throw Error("tensor appears in a shard other than the one the index names", src + ": " + name, it->second,
                  fs::path(src).filename().string());
  }
  for (const auto& [name, file] : expected) {
    if (file_slot[file] == SIZE_MAX) continue;
    const size_t slot = file_slot[file];
    if (!c.files_[slot].contains(name))
      throw Error("tensor listed in the shard index is missing from its shard",
                  c.files_[slot].path() + ": " + name);
    c.where_[name] = slot;
  }
  for (const auto& f : c.files_)
    for (const auto& t : f.tensors()) {
      auto it = expected.find(t.name);
      if (it == expected.end())
        throw Error("tensor in a shard is not listed in the shard index", f.path() + ": " + t.name);
      if (file_slot[it->second] == SIZE_MAX || c.files_[file_slot[it->second]].path() != f.path())
        throw Error("tensor appears in a shard other than the one the index names",
                    f.path() + ": " + t.name, it->second, fs::path(f.path()).filename().string());
    }
  return c;
}

Checkpoint Checkpoint::from_tensors(std::map<std::string, at::Tensor> tensors, const std::string& name) {
  Checkpoint c;
  c.path_ = name;
  for (auto& [key, t] : tensors) {
    if (!t.defined()) throw Error("undefined tensor", name + ": " + key);
    TensorInfo info;
    info.name = key;
    info.dtype = scalar_type_to_dtype(t.scalar_type());
    info.shape = t.sizes().vec();
    info.end = static_cast<uint64_t>(t.numel()) * t.element_size();
    c.memory_info_[key] = info;
  }
  c.memory_ = std::move(tensors);
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size() + memory_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  for (const auto& kv : memory_) out.push_back(kv.first);
  std::sort(out.begin(), out.end());
  return out;
}

std::string Checkpoint::source_of(const std::string& name) const {
  auto src = memory_source_.find(name);
  if (src != memory_source_.end()) return src->second;
  if (memory_.count(name)) return path_;
  return file_of(name).path();
}

void Checkpoint::drop_pages(const std::string& name) const {
  auto it = where_.find(name);
  if (it != where_.end()) files_[it->second].drop_pages(files_[it->second].info(name));
}

const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error("tensor not found", path_ + ": " + name);
  return files_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto m = memory_info_.find(name);
  return m != memory_info_.end() ? m->second : file_of(name).info(name);
}

at::Tensor Checkpoint::get(const std::string& name) const {
  auto m = memory_.find(name);
  return m != memory_.end() ? m->second : file_of(name).get(name);
}

const std::map<std::string, std::string>& Checkpoint::metadata() const {
  static const std::map<std::string, std::string> empty;
  return files_.empty() ? empty : files_[0].metadata();
}

// ---------------------------------------------------------------------------------------------
// Writing

void save_safetensors_lazy(const std::string& path, const std::vector<LazyTensorToWrite>& tensors,
                           const std::map<std::string, std::string>& metadata) {
  // Header first, from shapes alone; then the data one tensor at a time, so writing a large
  // checkpoint never holds more than one extra contiguous copy.
  json hdr = json::object();
  if (!metadata.empty()) hdr["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      throw Error("invalid tensor name", path, "a non-empty name other than __metadata__", t.name);
    if (!names.insert(t.name).second) throw Error("duplicate tensor name", path + ": " + t.name);
    if (!t.make) throw Error("undefined tensor", path + ": " + t.name);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) throw Error("negative dimension", path + ": " + t.name, ">= 0", shape_str(t.shape));
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t nbytes = numel * dtype_size(t.dtype);
    hdr[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string h = hdr.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data region 8-byte aligned
  const std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& what, const std::string& why) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw Error(what, tmp, "", why);
  };
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write file", tmp, "a writable path", std::strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>((h.size() >> (8 * i)) & 0xFF);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto& t : tensors) {
      at::Tensor c;
      try {
        c = t.make();
        if (c.is_meta()) {  // no data: a hole (the file is sparse; it reads as zeros)
          if (c.sizes().vec() != t.shape || static_cast<size_t>(c.element_size()) != dtype_size(t.dtype))
            fail("tensor differs from its declared shape or dtype: " + t.name,
                 shape_str(c.sizes().vec()) + " vs " + shape_str(t.shape));
          out.seekp(static_cast<std::streamoff>(c.numel() * c.element_size()), std::ios::cur);
          continue;
        }
        c = c.detach().to(at::kCPU).contiguous();
      } catch (...) {
        std::error_code ec;
        fs::remove(tmp, ec);
        throw;
      }
      if (c.sizes().vec() != t.shape || static_cast<size_t>(c.element_size()) != dtype_size(t.dtype))
        fail("tensor differs from its declared shape or dtype: " + t.name,
             shape_str(c.sizes().vec()) + " vs " + shape_str(t.shape));
      out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
      if (!out) fail("write failed", std::strerror(errno));
    }
    out.flush();
    if (!out) fail("write failed", std::strerror(errno));
  }
  std::error_code ec;
  // Trailing holes (meta tensors last) need the size set explicitly.
  fs::resize_file(tmp, 8 + h.size() + offset, ec);
  if (ec) fail("cannot size file", ec.message());
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot move file into place", path, "", ec.message());
}

void save_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<LazyTensorToWrite> lazy;
  lazy.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (!t.tensor.defined()) throw Error("undefined tensor", path + ": " + t.name);
    Dtype d = scalar_type_to_dtype(t.tensor.scalar_type());
    if (t.has_dtype_override) {
      if (dtype_size(t.dtype_override) != static_cast<size_t>(t.tensor.element_size()))
        throw Error("dtype override does not match the element size", path + ": " + t.name,
                    std::to_string(dtype_size(t.dtype_override)) + " bytes",
                    std::to_string(t.tensor.element_size()) + " bytes");
      d = t.dtype_override;
    }
    at::Tensor tensor = t.tensor;
    lazy.push_back({t.name, d, tensor.sizes().vec(), [tensor] { return tensor; }});
  }
  save_safetensors_lazy(path, lazy, metadata);
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<TensorToWrite> list;
  for (const auto& [name, t] : tensors) list.push_back({name, t});
  save_safetensors(path, list, metadata);
}

}  // namespace omniflux
