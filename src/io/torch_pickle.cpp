// torch.save zip files of tensor state dicts: reading (the checks live in io/torch_archive.cpp,
// without LibTorch) and a minimal writer (stored entries, protocol 2, as torch.save writes them;
// torch/serialization.py _save, torch/_utils.py _rebuild_tensor_v2).
#include "io/torch_pickle.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <sstream>
#include <vector>

#include <ATen/ATen.h>

#include "io/crc32.h"
#include "io/torch_archive.h"
#include "omniflux/error.h"
#include "io/file_write.h"
#include "io/paths.h"

namespace omniflux {

namespace {

std::string read_file(const std::string& path) {
  require_regular_file(path, "checkpoint file");  // a FIFO would block the read
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open file", path, "a readable file", "missing or unreadable");
  return std::string(std::istreambuf_iterator<char>(f), {});
}

at::ScalarType scalar_type(torch_archive::Dtype d) {
  using D = torch_archive::Dtype;
  switch (d) {
    case D::Float: return at::kFloat;
    case D::Double: return at::kDouble;
    case D::Half: return at::kHalf;
    case D::BFloat16: return at::kBFloat16;
    case D::Long: return at::kLong;
    case D::Int: return at::kInt;
    case D::Short: return at::kShort;
    case D::Char: return at::kChar;
    case D::Byte: return at::kByte;
    case D::Bool: return at::kBool;
  }
  return at::kByte;
}

}  // namespace

// The archive and pickle are read and checked without LibTorch (io/torch_archive.h); here each
// storage becomes one tensor and each record a contiguous copy of its view.
std::map<std::string, at::Tensor> load_torch_state_dict(const std::string& path) {
  const std::string bytes = read_file(path);
  const torch_archive::StateDict sd = torch_archive::read_state_dict(bytes, path);
  std::map<std::string, at::Tensor> storages, out;
  for (const auto& [name, r] : sd.tensors) {
    at::Tensor& st = storages[r.storage];
    if (!st.defined()) {
      const torch_archive::ZipEntry& e = sd.entries.at(r.storage);
      st = at::empty({r.storage_numel}, at::TensorOptions().dtype(scalar_type(r.dtype)));
      if (e.size > 0) std::memcpy(st.data_ptr(), bytes.data() + e.offset, e.size);
    }
    const bool empty = std::find(r.size.begin(), r.size.end(), 0) != r.size.end();
    out[name] = empty ? at::empty(r.size, st.options()) : st.as_strided(r.size, r.stride, r.offset).contiguous().clone();
  }
  return out;
}

namespace {

struct ZipWriter {
  std::string out;
  struct Entry {
    std::string name;
    uint32_t crc;
    size_t size, offset;
  };
  std::vector<Entry> entries;
  static void put(std::string& s, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
  void add(const std::string& name, const std::string& data) {
    Entry e{name, crc32(reinterpret_cast<const uint8_t*>(data.data()), data.size()), data.size(), out.size()};
    // Pad with an extra field so that the data starts on a 64-byte boundary, as PyTorchStreamWriter.
    const size_t base = out.size() + 30 + name.size() + 4;
    const size_t pad = (64 - base % 64) % 64;
    put(out, 0x04034b50u, 4);
    put(out, 20, 2); put(out, 0, 2); put(out, 0, 2);  // version, flags, method stored
    put(out, 0, 2); put(out, 0, 2);                   // time, date
    put(out, e.crc, 4); put(out, data.size(), 4); put(out, data.size(), 4);
    put(out, name.size(), 2); put(out, pad + 4, 2);
    out += name;
    put(out, 0x4246, 2);  // "FB" padding field
    put(out, pad, 2);
    out.append(pad, 'Z');
    out += data;
    entries.push_back(e);
  }
  std::string finish() {
    const size_t cd = out.size();
    for (const Entry& e : entries) {
      put(out, 0x02014b50u, 4);
      put(out, 20, 2); put(out, 20, 2); put(out, 0, 2); put(out, 0, 2);
      put(out, 0, 2); put(out, 0, 2);
      put(out, e.crc, 4); put(out, e.size, 4); put(out, e.size, 4);
      put(out, e.name.size(), 2); put(out, 0, 2); put(out, 0, 2);
      put(out, 0, 2); put(out, 0, 2); put(out, 0, 4);
      put(out, e.offset, 4);
      out += e.name;
    }
    const size_t cd_size = out.size() - cd;
    put(out, 0x06054b50u, 4);
    put(out, 0, 2); put(out, 0, 2);
    put(out, entries.size(), 2); put(out, entries.size(), 2);
    put(out, cd_size, 4); put(out, cd, 4); put(out, 0, 2);
    return out;
  }
};

std::string storage_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "FloatStorage";
    case at::kDouble: return "DoubleStorage";
    case at::kHalf: return "HalfStorage";
    case at::kBFloat16: return "BFloat16Storage";
    case at::kLong: return "LongStorage";
    case at::kInt: return "IntStorage";
    case at::kByte: return "ByteStorage";
    case at::kBool: return "BoolStorage";
    default: throw Error("unsupported dtype for torch.save", "save_torch_state_dict", "float/int", std::string(c10::toString(t)));
  }
}

}  // namespace

void save_torch_state_dict(const std::string& path, const std::map<std::string, at::Tensor>& tensors) {
  auto str = [](std::string& p, const std::string& s) {
    p += 'X';
    ZipWriter::put(p, s.size(), 4);
    p += s;
  };
  auto integer = [](std::string& p, int64_t v) {
    if (v >= 0 && v < (int64_t(1) << 31)) {
      p += 'J';
      ZipWriter::put(p, static_cast<uint64_t>(v), 4);
    } else {
      p += '\x8a';
      p += '\x08';
      ZipWriter::put(p, static_cast<uint64_t>(v), 8);
    }
  };
  std::string p = "\x80\x02";
  p += "ccollections\nOrderedDict\n)R(";
  std::vector<std::string> records;
  for (const auto& [name, t0] : tensors) {
    const at::Tensor t = t0.detach().cpu().contiguous();
    const std::string key = std::to_string(records.size());
    str(p, name);
    p += "ctorch._utils\n_rebuild_tensor_v2\n(";
    p += "(";  // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
    str(p, "storage");
    p += "ctorch\n" + storage_name(t.scalar_type()) + "\n";
    str(p, key);
    str(p, "cpu");
    integer(p, t.numel());
    p += "tQ";
    integer(p, 0);
    p += "(";
    for (int64_t s : t.sizes()) integer(p, s);
    p += "t(";
    for (int64_t s : t.strides()) integer(p, s);
    p += "t\x89";
    p += "ccollections\nOrderedDict\n)R";
    p += "tR";
    records.push_back(t.numel() == 0 ? std::string()
                                     : std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
  }
  p += "u.";
  ZipWriter z;
  z.add("archive/data.pkl", p);
  z.add("archive/byteorder", "little");
  for (size_t i = 0; i < records.size(); ++i) z.add("archive/data/" + std::to_string(i), records[i]);
  z.add("archive/version", "3\n");
  write_file_atomic(path, z.finish());
}

}  // namespace omniflux
