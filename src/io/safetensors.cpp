// safetensors reading and writing. Validation follows the reference implementation
// (huggingface/safetensors, `SafeTensors::read_metadata` / `validate`): a sane header length, a JSON
// object header, known dtypes, offsets that tile the data region exactly (no gap, no overlap), and
// a byte length equal to dtype size x element count. Duplicate names are rejected too.
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
#include <torch/version.h>

#include "omniflux/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace omniflux {

// ---------------------------------------------------------------------------------------------
// dtypes

namespace {
struct DtypeRow {
  Dtype dtype;
  const char* name;
  size_t size;
};
constexpr std::array<DtypeRow, 12> kDtypes = {{
    {Dtype::F64, "F64", 8}, {Dtype::F32, "F32", 4}, {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::F8_E5M2, "F8_E5M2", 1},
    {Dtype::I64, "I64", 8}, {Dtype::I32, "I32", 4}, {Dtype::I16, "I16", 2},
    {Dtype::I8, "I8", 1}, {Dtype::U8, "U8", 1}, {Dtype::BOOL, "BOOL", 1},
}};
const DtypeRow& row(Dtype d) { return kDtypes[static_cast<size_t>(d)]; }
}  // namespace

const char* dtype_name(Dtype d) { return row(d).name; }
size_t dtype_size(Dtype d) { return row(d).size; }

bool parse_safetensors_dtype(const std::string& s, Dtype* out) {
  for (const auto& r : kDtypes) {
    if (s == r.name) {
      *out = r.dtype;
      return true;
    }
  }
  return false;
}

c10::ScalarType dtype_to_scalar_type(Dtype d) {
  switch (d) {
    case Dtype::F64: return c10::kDouble;
    case Dtype::F32: return c10::kFloat;
    case Dtype::F16: return c10::kHalf;
    case Dtype::BF16: return c10::kBFloat16;
#if TORCH_VERSION_MAJOR >= 2
    case Dtype::F8_E4M3: return c10::ScalarType::Float8_e4m3fn;
    case Dtype::F8_E5M2: return c10::ScalarType::Float8_e5m2;
#else
    case Dtype::F8_E4M3:
    case Dtype::F8_E5M2: return c10::kByte;  // raw bits: LibTorch 1.x has no float8 types
#endif
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
#if TORCH_VERSION_MAJOR >= 2
    case c10::ScalarType::Float8_e4m3fn: return Dtype::F8_E4M3;
    case c10::ScalarType::Float8_e5m2: return Dtype::F8_E5M2;
#endif
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

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Memory map

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error("cannot open file", path, "a readable file", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error("not a regular file", path);
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
      // PROT_WRITE with MAP_PRIVATE: an in-place op on a zero-copy weight gets private pages
      // instead of a segfault; the file itself is never written.
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
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

// ---------------------------------------------------------------------------------------------
// Header parsing and validation

namespace {

bool valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// Rejects duplicate keys in the top-level object (nlohmann would keep the last one silently).
json parse_header_json(const uint8_t* p, size_t n, const std::string& where) {
  json j;
  try {
    j = json::parse(p, p + n);
  } catch (const json::exception& e) {
    throw Error("safetensors header is not valid JSON", where, "a JSON object", e.what());
  }
  // Re-scan the top-level keys with the SAX interface to find duplicates.
  struct KeySax : nlohmann::json_sax<json> {
    int depth = 0;
    std::set<std::string> seen;
    std::string dup;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { ++depth; return true; }
    bool key(string_t& k) override {
      if (depth == 1 && !seen.insert(k).second && dup.empty()) dup = k;
      return true;
    }
    bool end_object() override { --depth; return true; }
    bool start_array(std::size_t) override { ++depth; return true; }
    bool end_array() override { --depth; return true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
      return false;
    }
  } sax;
  json::sax_parse(p, p + n, &sax);
  if (!sax.dup.empty())
    throw Error("duplicate tensor name in safetensors header", where + ": " + sax.dup);
  return j;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

uint64_t get_u64(const json& v, const std::string& where, const char* field) {
  if (!v.is_number_unsigned())
    throw Error(std::string("invalid '") + field + "' in safetensors header", where,
                "a non-negative integer", v.dump());
  return v.get<uint64_t>();
}

}  // namespace

SafetensorsFile SafetensorsFile::from_buffer(const uint8_t* data, size_t size,
                                             const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  if (size < 8)
    throw Error("file too small to be safetensors", name, "at least 8 bytes",
                std::to_string(size) + " bytes");
  const uint64_t n = read_u64_le(data);
  if (n > kMaxHeaderBytes)
    throw Error("safetensors header length too large", name,
                "at most " + std::to_string(kMaxHeaderBytes), std::to_string(n));
  if (n > size - 8)
    throw Error("safetensors header length exceeds the file", name,
                "at most " + std::to_string(size - 8), std::to_string(n));
  const uint8_t* hdr = data + 8;
  if (n == 0 || hdr[0] != '{')
    throw Error("safetensors header does not start with '{'", name);
  if (!valid_utf8(hdr, n)) throw Error("safetensors header is not valid UTF-8", name);
  json j = parse_header_json(hdr, n, name);
  if (!j.is_object()) throw Error("safetensors header is not a JSON object", name);

  const uint64_t data_len = size - 8 - n;
  f.base_ = data + 8 + n;
  f.size_ = size;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) throw Error("__metadata__ is not an object", name);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error("__metadata__ value is not a string", name + ": __metadata__." + m.key(),
                      "a string", m.value().dump());
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = name + ": " + key;
    if (!v.is_object()) throw Error("tensor entry is not an object", where);
    TensorInfo t;
    t.name = key;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string())
      throw Error("tensor entry has no dtype string", where);
    if (!parse_safetensors_dtype(dt->get<std::string>(), &t.dtype))
      throw Error("unsupported dtype", where,
                  "F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8 or BOOL",
                  dt->get<std::string>());
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) throw Error("tensor entry has no shape array", where);
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t dim = get_u64(d, where, "shape");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          !checked_mul(numel, dim, &numel))
        throw Error("tensor shape overflows", where, "", sh->dump());
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      throw Error("tensor entry needs data_offsets [begin, end]", where);
    t.begin = get_u64((*off)[0], where, "data_offsets");
    t.end = get_u64((*off)[1], where, "data_offsets");
    if (t.begin > t.end)
      throw Error("tensor data_offsets are reversed", where, "begin <= end",
                  "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]");
    if (t.end > data_len)
      throw Error("tensor data is out of the file's bounds", where,
                  "end <= " + std::to_string(data_len), std::to_string(t.end));
    uint64_t nbytes;
    if (!checked_mul(numel, dtype_size(t.dtype), &nbytes) || nbytes != t.end - t.begin)
      throw Error("tensor byte length does not match dtype x shape", where,
                  std::to_string(numel) + " x " + std::to_string(dtype_size(t.dtype)) + " bytes",
                  std::to_string(t.end - t.begin) + " bytes");
    f.tensors_.push_back(std::move(t));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The tensors must tile [0, data_len) exactly: no gap, no overlap, nothing after the last.
  uint64_t cursor = 0;
  for (const auto& t : f.tensors_) {
    if (t.begin != cursor)
      throw Error(t.begin < cursor ? "tensor data overlaps the previous tensor"
                                   : "gap in the data region before tensor",
                  name + ": " + t.name, "begin = " + std::to_string(cursor),
                  std::to_string(t.begin));
    cursor = t.end;
  }
  if (cursor != data_len)
    throw Error("tensors do not cover the data region", name,
                std::to_string(cursor) + " data bytes", std::to_string(data_len));
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
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open file", path, "a readable file", std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string resolve_checkpoint_path(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error("checkpoint path does not exist", path);
  if (!fs::is_directory(path, ec)) return path;
  std::vector<std::string> index, single;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    const std::string f = e.path().filename().string();
    if (ends_with(f, ".safetensors.index.json")) index.push_back(e.path().string());
    else if (ends_with(f, ".safetensors")) single.push_back(e.path().string());
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
  throw Error(single.empty() ? "no safetensors file in folder" : "several safetensors files and no index in folder",
              path, "model.safetensors, diffusion_pytorch_model.safetensors or an index file",
              std::to_string(single.size()) + " .safetensors files");
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& input) {
  Checkpoint c;
  c.path_ = resolve_checkpoint_path(input);
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
    if (file.empty() || rel.is_absolute() ||
        std::any_of(rel.begin(), rel.end(), [](const fs::path& p) { return p == ".."; }))
      throw Error("shard file name must be relative to the index folder", c.path_ + ": " + it.key(),
                  "a file name", file);
    expected[it.key()] = file;
    if (!file_slot.count(file)) {
      const fs::path shard = dir / rel;
      std::error_code ec;
      if (!fs::exists(shard, ec))
        throw Error("shard named in the index does not exist", c.path_ + ": " + it.key(),
                    "file " + shard.string(), "missing");
      file_slot[file] = c.files_.size();
      c.files_.push_back(SafetensorsFile::open(shard.string()));
    }
  }
  for (const auto& [name, file] : expected) {
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
      if (c.files_[file_slot[it->second]].path() != f.path())
        throw Error("tensor appears in a shard other than the one the index names",
                    f.path() + ": " + t.name, it->second, fs::path(f.path()).filename().string());
    }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error("tensor not found", path_ + ": " + name);
  return files_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const { return file_of(name).info(name); }
at::Tensor Checkpoint::get(const std::string& name) const { return file_of(name).get(name); }

const std::map<std::string, std::string>& Checkpoint::metadata() const {
  static const std::map<std::string, std::string> empty;
  return files_.empty() ? empty : files_[0].metadata();
}

// ---------------------------------------------------------------------------------------------
// Writing

void save_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json hdr = json::object();
  if (!metadata.empty()) hdr["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      throw Error("invalid tensor name", path, "a non-empty name other than __metadata__", t.name);
    if (!names.insert(t.name).second) throw Error("duplicate tensor name", path + ": " + t.name);
    if (!t.tensor.defined()) throw Error("undefined tensor", path + ": " + t.name);
    at::Tensor c = t.tensor.detach().to(at::kCPU).contiguous();
    Dtype d = scalar_type_to_dtype(c.scalar_type());
    if (t.has_dtype_override) {
      if (dtype_size(t.dtype_override) != static_cast<size_t>(c.element_size()))
        throw Error("dtype override does not match the element size", path + ": " + t.name,
                    std::to_string(dtype_size(t.dtype_override)) + " bytes",
                    std::to_string(c.element_size()) + " bytes");
      d = t.dtype_override;
    }
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    hdr[t.name] = {{"dtype", dtype_name(d)},
                   {"shape", c.sizes().vec()},
                   {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(c);
  }
  std::string h = hdr.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data region 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write file", tmp, "a writable path", std::strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>((h.size() >> (8 * i)) & 0xFF);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto& c : data)
      out.write(static_cast<const char*>(c.data_ptr()),
                static_cast<std::streamsize>(c.numel() * c.element_size()));
    out.flush();
    if (!out) throw Error("write failed", tmp, "", std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot move file into place", path, "", ec.message());
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<TensorToWrite> list;
  for (const auto& [name, t] : tensors) list.push_back({name, t});
  save_safetensors(path, list, metadata);
}

}  // namespace omniflux
