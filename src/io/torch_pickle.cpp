// torch.save zip files of tensor state dicts: a minimal zip reader/writer (stored entries only, as
// torch's PyTorchStreamWriter writes them) and a pickle machine limited to the objects torch.save
// emits for a dict of tensors (torch/serialization.py _save, torch/_utils.py _rebuild_tensor_v2).
#include "omniflux/io/torch_pickle.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <sstream>
#include <vector>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/file_write.h"
#include "omniflux/io/paths.h"

namespace omniflux {

namespace {

// ---- zip ----------------------------------------------------------------------------------------

uint32_t crc32(const uint8_t* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint64_t rd(const std::string& b, size_t off, int bytes, const std::string& where) {
  if (off + bytes > b.size()) throw Error("truncated zip archive", where);
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[off + i]);
  return v;
}

// name -> (offset of the data, size), for stored (uncompressed) entries.
std::map<std::string, std::pair<size_t, size_t>> zip_entries(const std::string& b, const std::string& path) {
  if (b.size() < 22 || b.compare(0, 4, "PK\x03\x04") != 0)
    throw Error("not a torch.save zip archive (legacy torch.save or another format)", path,
                "a zip file (torch >= 1.6 torch.save)", b.size() < 4 ? "a file too short" : "no zip signature");
  // End of central directory: the last "PK\5\6" within the final 64 KiB + 22 bytes.
  size_t eocd = std::string::npos;
  for (size_t i = b.size() - 22 + 1; i-- > 0 && b.size() - i <= 65557;)
    if (b.compare(i, 4, "PK\x05\x06") == 0) {
      eocd = i;
      break;
    }
  if (eocd == std::string::npos) throw Error("zip archive without an end of central directory", path);
  uint64_t count = rd(b, eocd + 10, 2, path), cd = rd(b, eocd + 16, 4, path);
  if (count == 0xFFFF || cd == 0xFFFFFFFFu) {  // zip64: locator just before the EOCD
    if (eocd < 20 || b.compare(eocd - 20, 4, "PK\x06\x07") != 0) throw Error("zip64 archive without a locator", path);
    const uint64_t z = rd(b, eocd - 20 + 8, 8, path);
    if (b.compare(z, 4, "PK\x06\x06") != 0) throw Error("bad zip64 end of central directory", path);
    count = rd(b, z + 32, 8, path);
    cd = rd(b, z + 48, 8, path);
  }
  std::map<std::string, std::pair<size_t, size_t>> out;
  size_t p = cd;
  for (uint64_t e = 0; e < count; ++e) {
    if (rd(b, p, 4, path) != 0x02014b50u) throw Error("bad zip central directory entry", path);
    const uint64_t method = rd(b, p + 10, 2, path);
    const uint32_t crc = static_cast<uint32_t>(rd(b, p + 16, 4, path));
    uint64_t csize = rd(b, p + 20, 4, path), usize = rd(b, p + 24, 4, path);
    const size_t nlen = rd(b, p + 28, 2, path), xlen = rd(b, p + 30, 2, path), clen = rd(b, p + 32, 2, path);
    uint64_t local = rd(b, p + 42, 4, path);
    const std::string name = b.substr(p + 46, nlen);
    // zip64 extra field (id 1): the 0xFFFFFFFF fields, in order usize, csize, offset.
    for (size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {
      const uint64_t id = rd(b, x, 2, path), len = rd(b, x + 2, 2, path);
      if (id == 1) {
        size_t q = x + 4;
        if (usize == 0xFFFFFFFFu) usize = rd(b, q, 8, path), q += 8;
        if (csize == 0xFFFFFFFFu) csize = rd(b, q, 8, path), q += 8;
        if (local == 0xFFFFFFFFu) local = rd(b, q, 8, path);
      }
      x += 4 + len;
    }
    if (method != 0)
      throw Error("compressed zip entry (torch.save stores its entries uncompressed)", path + ": " + name,
                  "method 0 (stored)", "method " + std::to_string(method));
    if (rd(b, local, 4, path) != 0x04034b50u) throw Error("bad zip local header", path + ": " + name);
    const size_t data = local + 30 + rd(b, local + 26, 2, path) + rd(b, local + 28, 2, path);
    if (data + csize > b.size()) throw Error("truncated zip entry", path + ": " + name);
    if (csize != usize) throw Error("inconsistent stored zip entry sizes", path + ": " + name);
    // torch.save (miniz) records each entry's CRC-32: a flipped byte is caught here.
    const uint32_t got = crc32(reinterpret_cast<const uint8_t*>(b.data()) + data, csize);
    if (got != crc) {
      char hex[2][16];
      std::snprintf(hex[0], sizeof hex[0], "%08x", crc);
      std::snprintf(hex[1], sizeof hex[1], "%08x", got);
      throw Error("zip entry fails its CRC-32 check (corrupt file)", path + ": " + name, std::string("CRC ") + hex[0],
                  std::string("CRC ") + hex[1]);
    }
    out[name] = {data, csize};
    p += 46 + nlen + xlen + clen;
  }
  return out;
}

// ---- pickle -------------------------------------------------------------------------------------

struct Obj;
using ObjP = std::shared_ptr<Obj>;
struct Obj {
  enum Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Mark } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s;                                // Str, Bytes, Global ("module.name"), Storage key
  std::vector<ObjP> items;                      // Tuple, List
  std::vector<std::pair<ObjP, ObjP>> dict;      // Dict
  at::Tensor t;                                 // Storage (flat uint8 bytes viewed as its dtype), Tensor
};
ObjP make(Obj::Kind k) {
  auto o = std::make_shared<Obj>();
  o->kind = k;
  return o;
}

at::ScalarType storage_dtype(const std::string& global, const std::string& where) {
  static const std::map<std::string, at::ScalarType> m = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},     {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool},     {"torch.UntypedStorage", at::kByte}};
  auto it = m.find(global);
  if (it == m.end()) throw Error("unsupported storage type in torch pickle", where, "a float/int storage", global);
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const std::string& bytes, std::string where,
            std::function<at::Tensor(const std::string& key, at::ScalarType, int64_t numel)> storage)
      : b_(bytes), where_(std::move(where)), storage_(std::move(storage)) {}

  ObjP run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                                   // PROTO
        case 0x95: take(8); break;                                // FRAME
        case '.': return pop();                                   // STOP
        case '(': push(make(Obj::Mark)); break;                   // MARK
        case 'N': push(make(Obj::None)); break;
        case 0x88: case 0x89: { auto o = make(Obj::Bool); o->i = op == 0x88; push(o); break; }
        case 'K': push_int(u8()); break;                          // BININT1
        case 'M': push_int(uint_le(2)); break;                    // BININT2
        case 'J': push_int(static_cast<int32_t>(uint_le(4))); break;  // BININT
        case 0x8a: {                                              // LONG1
          const size_t n = u8();
          if (n > 8) fail("integer too large");
          int64_t v = static_cast<int64_t>(uint_le(n));
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v -= int64_t(1) << (8 * n);
          push_int(v);
          break;
        }
        case 'G': {                                               // BINFLOAT (big endian)
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | u8();
          auto o = make(Obj::Float);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 'X': push_str(take(uint_le(4)), Obj::Str); break;  // BINUNICODE
        case 0x8c: push_str(take(u8()), Obj::Str); break;       // SHORT_BINUNICODE
        case 0x8d: push_str(take(uint_le(8)), Obj::Str); break; // BINUNICODE8
        case 'T': push_str(take(uint_le(4)), Obj::Str); break;  // BINSTRING
        case 'U': push_str(take(u8()), Obj::Str); break;        // SHORT_BINSTRING
        case 'B': push_str(take(uint_le(4)), Obj::Bytes); break;
        case 'C': push_str(take(u8()), Obj::Bytes); break;
        case 'c': {                                               // GLOBAL module\nname\n
          std::string mod = line(), name = line();
          push_str(mod + "." + name, Obj::Global);
          break;
        }
        case 0x93: {                                              // STACK_GLOBAL
          ObjP name = pop(), mod = pop();
          push_str(mod->s + "." + name->s, Obj::Global);
          break;
        }
        case ')': push(make(Obj::Tuple)); break;
        case 't': { auto o = make(Obj::Tuple); o->items = pop_mark(); push(o); break; }
        case 0x85: case 0x86: case 0x87: {
          auto o = make(Obj::Tuple);
          o->items.resize(op - 0x84);
          for (size_t k = o->items.size(); k-- > 0;) o->items[k] = pop();
          push(o);
          break;
        }
        case ']': push(make(Obj::List)); break;
        case 'l': { auto o = make(Obj::List); o->items = pop_mark(); push(o); break; }
        case 'a': { ObjP v = pop(); top(Obj::List)->items.push_back(v); break; }
        case 'e': { auto v = pop_mark(); auto& l = top(Obj::List)->items; l.insert(l.end(), v.begin(), v.end()); break; }
        case '}': push(make(Obj::Dict)); break;
        case 'd': {
          auto v = pop_mark();
          auto o = make(Obj::Dict);
          for (size_t k = 0; k + 1 < v.size(); k += 2) o->dict.emplace_back(v[k], v[k + 1]);
          push(o);
          break;
        }
        case 's': { ObjP v = pop(), k = pop(); top(Obj::Dict)->dict.emplace_back(k, v); break; }
        case 'u': {
          auto v = pop_mark();
          if (v.size() % 2) fail("odd SETITEMS");
          auto& d = top(Obj::Dict)->dict;
          for (size_t k = 0; k < v.size(); k += 2) d.emplace_back(v[k], v[k + 1]);
          break;
        }
        case 'q': memo_[u8()] = peek(); break;                    // BINPUT
        case 'r': memo_[uint_le(4)] = peek(); break;              // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = peek(); break;           // MEMOIZE
        case 'h': push(memo(u8())); break;                        // BINGET
        case 'j': push(memo(uint_le(4))); break;                  // LONG_BINGET
        case 'Q': push(persistent(pop())); break;                 // BINPERSID
        case 'R': { ObjP args = pop(), fn = pop(); push(reduce(fn, args)); break; }
        case 'b': {                                               // BUILD: state of an OrderedDict / tensor
          pop();
          const auto k = peek()->kind;
          if (k != Obj::Dict && k != Obj::Tensor) fail("BUILD on an unsupported object");
          break;
        }
        default: {
          std::ostringstream os;
          os << "unsupported pickle opcode 0x" << std::hex << static_cast<int>(op);
          fail(os.str());
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("cannot read the torch pickle: " + what, where_ + " (data.pkl at byte " + std::to_string(pos_) + ")",
                "a dict of tensors written by torch.save");
  }
  uint8_t u8() {
    if (pos_ >= b_.size()) fail("unexpected end of data");
    return static_cast<uint8_t>(b_[pos_++]);
  }
  uint64_t uint_le(size_t n) {
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= uint64_t(u8()) << (8 * k);
    return v;
  }
  std::string take(uint64_t n) {
    if (n > b_.size() - pos_) fail("string runs past the end");
    std::string s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    const size_t e = b_.find('\n', pos_);
    if (e == std::string::npos) fail("unterminated GLOBAL");
    std::string s = b_.substr(pos_, e - pos_);
    pos_ = e + 1;
    return s;
  }
  void push(ObjP o) { stack_.push_back(std::move(o)); }
  void push_int(int64_t v) {
    auto o = make(Obj::Int);
    o->i = v;
    push(o);
  }
  void push_str(std::string s, Obj::Kind k) {
    auto o = make(k);
    o->s = std::move(s);
    push(o);
  }
  ObjP pop() {
    if (stack_.empty() || stack_.back()->kind == Obj::Mark) fail("stack underflow");
    ObjP o = stack_.back();
    stack_.pop_back();
    return o;
  }
  ObjP peek() const {
    if (stack_.empty()) fail("empty stack");
    return stack_.back();
  }
  ObjP top(Obj::Kind k) const {
    ObjP o = peek();
    if (o->kind != k) fail("container of the wrong type");
    return o;
  }
  std::vector<ObjP> pop_mark() {
    std::vector<ObjP> v;
    while (!stack_.empty() && stack_.back()->kind != Obj::Mark) {
      v.push_back(stack_.back());
      stack_.pop_back();
    }
    if (stack_.empty()) fail("no MARK");
    stack_.pop_back();
    return {v.rbegin(), v.rend()};
  }
  ObjP memo(uint64_t k) const {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo key not found");
    return it->second;
  }
  int64_t as_int(const ObjP& o) const {
    if (o->kind != Obj::Int) fail("an integer was expected");
    return o->i;
  }
  std::vector<int64_t> int_tuple(const ObjP& o) const {
    if (o->kind != Obj::Tuple) fail("a tuple of integers was expected");
    std::vector<int64_t> v;
    for (const auto& x : o->items) v.push_back(as_int(x));
    return v;
  }

  // ('storage', torch.XStorage, key, location, numel)
  ObjP persistent(const ObjP& pid) {
    if (pid->kind != Obj::Tuple || pid->items.size() < 5 || pid->items[0]->s != "storage" ||
        pid->items[1]->kind != Obj::Global || pid->items[2]->kind != Obj::Str)
      fail("a persistent id other than a storage");
    const at::ScalarType dt = storage_dtype(pid->items[1]->s, where_);
    auto it = storages_.find(pid->items[2]->s);
    if (it == storages_.end())
      it = storages_.emplace(pid->items[2]->s, storage_(pid->items[2]->s, dt, as_int(pid->items[4]))).first;
    auto o = make(Obj::Storage);
    o->t = it->second;
    return o;
  }

  ObjP reduce(const ObjP& fn, const ObjP& args) {
    if (fn->kind != Obj::Global || args->kind != Obj::Tuple) fail("REDUCE of something other than a known global");
    const std::string& g = fn->s;
    const auto& a = args->items;
    if (g == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict with arguments");
      return make(Obj::Dict);
    }
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      // (storage, storage_offset, size, stride, [requires_grad, backward_hooks, metadata])
      if (a.size() < 4 || a[0]->kind != Obj::Storage) fail("malformed _rebuild_tensor_v2 arguments");
      const at::Tensor& st = a[0]->t;
      const int64_t off = as_int(a[1]);
      const auto size = int_tuple(a[2]), stride = int_tuple(a[3]);
      int64_t extent = off + 1;
      bool empty = false;
      for (size_t k = 0; k < size.size(); ++k) {
        if (size[k] < 0 || stride[k] < 0) fail("negative size or stride");
        if (size[k] == 0) empty = true;
        extent += (size[k] - 1) * stride[k];
      }
      if (size.size() != stride.size() || (!empty && extent > st.numel())) fail("tensor view outside its storage");
      auto o = make(Obj::Tensor);
      o->t = empty ? at::empty(size, st.options()) : st.as_strided(size, stride, off).contiguous().clone();
      return o;
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Obj::Tensor) fail("malformed _rebuild_parameter arguments");
      return a[0];
    }
    fail("unsupported object " + g);
  }

  const std::string& b_;
  std::string where_;
  std::function<at::Tensor(const std::string&, at::ScalarType, int64_t)> storage_;
  size_t pos_ = 0;
  std::vector<ObjP> stack_;
  std::map<uint64_t, ObjP> memo_;
  std::map<std::string, at::Tensor> storages_;
};

std::string read_file(const std::string& path) {
  require_regular_file(path, "checkpoint file");  // a FIFO would block the read
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open file", path, "a readable file", "missing or unreadable");
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

std::map<std::string, at::Tensor> load_torch_state_dict(const std::string& path) {
  const std::string bytes = read_file(path);
  const auto entries = zip_entries(bytes, path);
  std::string prefix;
  int found = 0;
  for (const auto& [name, _] : entries) {
    const std::string tail = "data.pkl";
    if (name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0 &&
        (name.size() == tail.size() || name[name.size() - tail.size() - 1] == '/')) {
      prefix = name.substr(0, name.size() - tail.size());
      ++found;
    }
  }
  if (found != 1) throw Error("torch.save archive without exactly one data.pkl", path, "1", std::to_string(found));
  if (auto it = entries.find(prefix + "byteorder"); it != entries.end()) {
    const std::string order = bytes.substr(it->second.first, it->second.second);
    if (order.rfind("little", 0) != 0) throw Error("unsupported byte order", path, "little", order);
  }
  const auto& pkl = entries.at(prefix + "data.pkl");
  const std::string pickle = bytes.substr(pkl.first, pkl.second);
  Unpickler up(pickle, path, [&](const std::string& key, at::ScalarType dt, int64_t numel) {
    auto it = entries.find(prefix + "data/" + key);
    if (it == entries.end()) throw Error("storage record missing from the archive", path, prefix + "data/" + key, "absent");
    const int64_t esize = static_cast<int64_t>(c10::elementSize(dt));
    if (numel < 0 || static_cast<int64_t>(it->second.second) != numel * esize)
      throw Error("storage record has the wrong size", path + ": " + prefix + "data/" + key,
                  std::to_string(numel * esize) + " bytes", std::to_string(it->second.second) + " bytes");
    at::Tensor t = at::empty({numel}, at::TensorOptions().dtype(dt));
    if (numel > 0) std::memcpy(t.data_ptr(), bytes.data() + it->second.first, it->second.second);
    return t;
  });
  ObjP root = up.run();
  if (root->kind != Obj::Dict) throw Error("torch.save file does not hold a dict", path, "a state dict of tensors");
  std::map<std::string, at::Tensor> out;
  for (const auto& [k, v] : root->dict) {
    if (k->kind != Obj::Str || v->kind != Obj::Tensor)
      throw Error("torch.save dict holds something other than name -> tensor", path,
                  "a flat state dict of tensors", k->kind == Obj::Str ? "a non-tensor value at '" + k->s + "'" : "a non-string key");
    out[k->s] = v->t;
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
