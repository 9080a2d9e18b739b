// torch.save zip files without LibTorch: a minimal zip reader (stored entries only, as torch's
// PyTorchStreamWriter writes them) and a pickle machine limited to the objects torch.save emits for
// a dict of tensors (torch/serialization.py _save, torch/_utils.py _rebuild_tensor_v2). Every
// offset and size read from the file is checked before use, without overflow: the bytes may be
// hostile (tests/fuzz/fuzz_torch_archive.cpp).
#include "io/torch_archive.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>

#include "io/crc32.h"
#include "omniflux/error.h"

namespace omniflux::torch_archive {

namespace {

// ---- zip ----------------------------------------------------------------------------------------

bool fits(const std::string& b, uint64_t off, uint64_t n) { return off <= b.size() && n <= b.size() - off; }

uint64_t rd(const std::string& b, uint64_t off, int bytes, const std::string& where) {
  if (!fits(b, off, static_cast<uint64_t>(bytes))) throw Error("truncated zip archive", where);
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[off + i]);
  return v;
}

bool signature(const std::string& b, uint64_t off, const char* sig) {
  return fits(b, off, 4) && std::memcmp(b.data() + off, sig, 4) == 0;
}

// ---- pickle -------------------------------------------------------------------------------------

struct Obj {
  enum Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Mark } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s;                              // Str, Bytes, Global ("module.name"), Storage (its entry)
  std::vector<Obj*> items;                    // Tuple, List
  std::vector<std::pair<Obj*, Obj*>> dict;    // Dict
  TensorRecord t;                             // Storage (dtype, storage_numel), Tensor
};

const std::map<std::string, Dtype>& storage_types() {
  static const std::map<std::string, Dtype> m = {
      {"torch.FloatStorage", Dtype::Float}, {"torch.DoubleStorage", Dtype::Double}, {"torch.HalfStorage", Dtype::Half},
      {"torch.BFloat16Storage", Dtype::BFloat16}, {"torch.LongStorage", Dtype::Long}, {"torch.IntStorage", Dtype::Int},
      {"torch.ShortStorage", Dtype::Short}, {"torch.CharStorage", Dtype::Char}, {"torch.ByteStorage", Dtype::Byte},
      {"torch.BoolStorage", Dtype::Bool}, {"torch.UntypedStorage", Dtype::Byte}};
  return m;
}

// Objects live in an arena owned by the machine: a pickle may build cycles (a list appended to
// itself through the memo), which reference counting would leak.
class Unpickler {
 public:
  Unpickler(const std::string& pickle, const std::string& archive, const std::map<std::string, ZipEntry>& entries,
            std::string prefix, std::string where)
      : b_(pickle), archive_(archive), entries_(entries), prefix_(std::move(prefix)), where_(std::move(where)) {}

  Obj* run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                                   // PROTO
        case 0x95: take(8); break;                                // FRAME
        case '.': return pop();                                   // STOP
        case '(': push(make(Obj::Mark)); break;                   // MARK
        case 'N': push(make(Obj::None)); break;
        case 0x88: case 0x89: { Obj* o = make(Obj::Bool); o->i = op == 0x88; push(o); break; }
        case 'K': push_int(u8()); break;                          // BININT1
        case 'M': push_int(static_cast<int64_t>(uint_le(2))); break;  // BININT2
        case 'J': push_int(static_cast<int32_t>(uint_le(4))); break;  // BININT
        case 0x8a: {                                              // LONG1
          const size_t n = u8();
          if (n > 8) fail("integer too large");
          uint64_t v = uint_le(n);
          if (n > 0 && n < 8 && ((v >> (8 * n - 1)) & 1)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
          push_int(static_cast<int64_t>(v));
          break;
        }
        case 'G': {                                               // BINFLOAT (big endian)
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | u8();
          Obj* o = make(Obj::Float);
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
          Obj *name = pop(), *mod = pop();
          push_str(mod->s + "." + name->s, Obj::Global);
          break;
        }
        case ')': push(make(Obj::Tuple)); break;
        case 't': { Obj* o = make(Obj::Tuple); o->items = pop_mark(); push(o); break; }
        case 0x85: case 0x86: case 0x87: {
          Obj* o = make(Obj::Tuple);
          o->items.resize(op - 0x84);
          for (size_t k = o->items.size(); k-- > 0;) o->items[k] = pop();
          push(o);
          break;
        }
        case ']': push(make(Obj::List)); break;
        case 'l': { Obj* o = make(Obj::List); o->items = pop_mark(); push(o); break; }
        case 'a': { Obj* v = pop(); top(Obj::List)->items.push_back(v); break; }
        case 'e': { auto v = pop_mark(); auto& l = top(Obj::List)->items; l.insert(l.end(), v.begin(), v.end()); break; }
        case '}': push(make(Obj::Dict)); break;
        case 'd': {
          auto v = pop_mark();
          Obj* o = make(Obj::Dict);
          for (size_t k = 0; k + 1 < v.size(); k += 2) o->dict.emplace_back(v[k], v[k + 1]);
          push(o);
          break;
        }
        case 's': { Obj *v = pop(), *k = pop(); top(Obj::Dict)->dict.emplace_back(k, v); break; }
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
        case 'R': { Obj *args = pop(), *fn = pop(); push(reduce(fn, args)); break; }
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
  Obj* make(Obj::Kind k) {
    arena_.push_back(std::make_unique<Obj>());
    arena_.back()->kind = k;
    return arena_.back().get();
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
  void push(Obj* o) { stack_.push_back(o); }
  void push_int(int64_t v) {
    Obj* o = make(Obj::Int);
    o->i = v;
    push(o);
  }
  void push_str(std::string s, Obj::Kind k) {
    Obj* o = make(k);
    o->s = std::move(s);
    push(o);
  }
  Obj* pop() {
    if (stack_.empty() || stack_.back()->kind == Obj::Mark) fail("stack underflow");
    Obj* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Obj* peek() const {
    if (stack_.empty()) fail("empty stack");
    return stack_.back();
  }
  Obj* top(Obj::Kind k) const {
    Obj* o = peek();
    if (o->kind != k) fail("container of the wrong type");
    return o;
  }
  std::vector<Obj*> pop_mark() {
    std::vector<Obj*> v;
    while (!stack_.empty() && stack_.back()->kind != Obj::Mark) {
      v.push_back(stack_.back());
      stack_.pop_back();
    }
    if (stack_.empty()) fail("no MARK");
    stack_.pop_back();
    return {v.rbegin(), v.rend()};
  }
  Obj* memo(uint64_t k) const {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo key not found");
    return it->second;
  }
  int64_t as_int(const Obj* o) const {
    if (o->kind != Obj::Int) fail("an integer was expected");
    return o->i;
  }
  std::vector<int64_t> int_tuple(const Obj* o) const {
    if (o->kind != Obj::Tuple) fail("a tuple of integers was expected");
    std::vector<int64_t> v;
    for (const Obj* x : o->items) v.push_back(as_int(x));
    return v;
  }

  // ('storage', torch.XStorage, key, location, numel): the entry <prefix>data/<key> must hold
  // exactly numel elements, and every reference to a key must agree on its type and size.
  Obj* persistent(const Obj* pid) {
    if (pid->kind != Obj::Tuple || pid->items.size() < 5 || pid->items[0]->s != "storage" ||
        pid->items[1]->kind != Obj::Global || pid->items[2]->kind != Obj::Str)
      fail("a persistent id other than a storage");
    const auto type = storage_types().find(pid->items[1]->s);
    if (type == storage_types().end())
      throw Error("unsupported storage type in torch pickle", where_, "a float/int storage", pid->items[1]->s);
    const std::string entry = prefix_ + "data/" + pid->items[2]->s;
    const int64_t numel = as_int(pid->items[4]);
    auto seen = storages_.find(entry);
    if (seen == storages_.end()) {
      auto it = entries_.find(entry);
      if (it == entries_.end()) throw Error("storage record missing from the archive", archive_, entry, "absent");
      const uint64_t esize = element_size(type->second);
      const bool ok = numel >= 0 && static_cast<uint64_t>(numel) <= std::numeric_limits<uint64_t>::max() / esize &&
                      it->second.size == static_cast<uint64_t>(numel) * esize;
      if (!ok)
        throw Error("storage record has the wrong size", archive_ + ": " + entry,
                    numel < 0 ? "a non-negative element count" : std::to_string(numel) + " elements of " + std::to_string(esize) + " bytes",
                    std::to_string(it->second.size) + " bytes");
      seen = storages_.emplace(entry, std::make_pair(type->second, numel)).first;
    } else if (seen->second != std::make_pair(type->second, numel)) {
      fail("storage " + entry + " referenced with two types or sizes");
    }
    Obj* o = make(Obj::Storage);
    o->s = entry;
    o->t.storage = entry;
    o->t.dtype = type->second;
    o->t.storage_numel = numel;
    return o;
  }

  Obj* reduce(const Obj* fn, const Obj* args) {
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
      Obj* o = make(Obj::Tensor);
      o->t = a[0]->t;
      o->t.offset = as_int(a[1]);
      o->t.size = int_tuple(a[2]);
      o->t.stride = int_tuple(a[3]);
      check_view(o->t);
      return o;
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Obj::Tensor) fail("malformed _rebuild_parameter arguments");
      return a[0];
    }
    fail("unsupported object " + g);
  }

  // The view must lie inside its storage and hold no more elements than it (overlapping views,
  // such as torch.save of an expanded tensor, are refused: they would let a tiny file ask for an
  // arbitrarily large tensor).
  void check_view(const TensorRecord& t) const {
    if (t.size.size() != t.stride.size()) fail("sizes and strides of different lengths");
    if (t.offset < 0) fail("negative storage offset");
    const int64_t max = std::numeric_limits<int64_t>::max();
    int64_t last = t.offset, numel = 1;
    for (size_t k = 0; k < t.size.size(); ++k) {
      if (t.size[k] < 0 || t.stride[k] < 0) fail("negative size or stride");
      if (t.size[k] == 0) return;  // empty: nothing is read
    }
    for (size_t k = 0; k < t.size.size(); ++k) {
      if (t.stride[k] > 0 && t.size[k] - 1 > (max - last) / t.stride[k]) fail("tensor view outside its storage");
      last += (t.size[k] - 1) * t.stride[k];
      if (numel > t.storage_numel / t.size[k]) fail("a view with more elements than its storage (overlapping strides)");
      numel *= t.size[k];
    }
    if (last >= t.storage_numel) fail("tensor view outside its storage");
  }

  const std::string& b_;
  const std::string& archive_;
  const std::map<std::string, ZipEntry>& entries_;
  std::string prefix_, where_;
  size_t pos_ = 0;
  std::vector<std::unique_ptr<Obj>> arena_;
  std::vector<Obj*> stack_;
  std::map<uint64_t, Obj*> memo_;
  std::map<std::string, std::pair<Dtype, int64_t>> storages_;
};

}  // namespace

size_t element_size(Dtype d) {
  switch (d) {
    case Dtype::Double: case Dtype::Long: return 8;
    case Dtype::Float: case Dtype::Int: return 4;
    case Dtype::Half: case Dtype::BFloat16: case Dtype::Short: return 2;
    case Dtype::Char: case Dtype::Byte: case Dtype::Bool: return 1;
  }
  return 1;
}

std::map<std::string, ZipEntry> zip_entries(const std::string& b, const std::string& path) {
  if (b.size() < 22 || b.compare(0, 4, "PK\x03\x04") != 0)
    throw Error("not a torch.save zip archive (legacy torch.save or another format)", path,
                "a zip file (torch >= 1.6 torch.save)", b.size() < 4 ? "a file too short" : "no zip signature");
  // End of central directory: the last "PK\5\6" within the final 64 KiB + 22 bytes.
  uint64_t eocd = std::numeric_limits<uint64_t>::max();
  for (size_t i = b.size() - 22 + 1; i-- > 0 && b.size() - i <= 65557;)
    if (signature(b, i, "PK\x05\x06")) {
      eocd = i;
      break;
    }
  if (eocd == std::numeric_limits<uint64_t>::max()) throw Error("zip archive without an end of central directory", path);
  uint64_t count = rd(b, eocd + 10, 2, path), cd = rd(b, eocd + 16, 4, path);
  if (count == 0xFFFF || cd == 0xFFFFFFFFu) {  // zip64: locator just before the EOCD
    if (eocd < 20 || !signature(b, eocd - 20, "PK\x06\x07")) throw Error("zip64 archive without a locator", path);
    const uint64_t z = rd(b, eocd - 20 + 8, 8, path);
    if (!signature(b, z, "PK\x06\x06")) throw Error("bad zip64 end of central directory", path);
    count = rd(b, z + 32, 8, path);
    cd = rd(b, z + 48, 8, path);
  }
  std::map<std::string, ZipEntry> out;
  uint64_t p = cd;
  for (uint64_t e = 0; e < count; ++e) {
    if (rd(b, p, 4, path) != 0x02014b50u) throw Error("bad zip central directory entry", path);
    const uint64_t method = rd(b, p + 10, 2, path);
    const uint32_t crc = static_cast<uint32_t>(rd(b, p + 16, 4, path));
    uint64_t csize = rd(b, p + 20, 4, path), usize = rd(b, p + 24, 4, path);
    const uint64_t nlen = rd(b, p + 28, 2, path), xlen = rd(b, p + 30, 2, path), clen = rd(b, p + 32, 2, path);
    uint64_t local = rd(b, p + 42, 4, path);
    if (!fits(b, p + 46, nlen + xlen)) throw Error("truncated zip archive", path);
    const std::string name = b.substr(p + 46, nlen);
    // zip64 extra field (id 1): the 0xFFFFFFFF fields, in order usize, csize, offset.
    for (uint64_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {
      const uint64_t id = rd(b, x, 2, path), len = rd(b, x + 2, 2, path);
      if (id == 1) {
        uint64_t q = x + 4;
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
    const uint64_t data = local + 30 + rd(b, local + 26, 2, path) + rd(b, local + 28, 2, path);
    if (!fits(b, data, csize)) throw Error("truncated zip entry", path + ": " + name);
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
    out[name] = {static_cast<size_t>(data), static_cast<size_t>(csize)};
    p += 46 + nlen + xlen + clen;
  }
  return out;
}

StateDict read_state_dict(const std::string& bytes, const std::string& path) {
  StateDict sd;
  sd.entries = zip_entries(bytes, path);
  std::string prefix;
  int found = 0;
  for (const auto& [name, _] : sd.entries) {
    const std::string tail = "data.pkl";
    if (name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0 &&
        (name.size() == tail.size() || name[name.size() - tail.size() - 1] == '/')) {
      prefix = name.substr(0, name.size() - tail.size());
      ++found;
    }
  }
  if (found != 1) throw Error("torch.save archive without exactly one data.pkl", path, "1", std::to_string(found));
  if (auto it = sd.entries.find(prefix + "byteorder"); it != sd.entries.end()) {
    const std::string order = bytes.substr(it->second.offset, it->second.size);
    if (order.rfind("little", 0) != 0) throw Error("unsupported byte order", path, "little", order);
  }
  const ZipEntry& pkl = sd.entries.at(prefix + "data.pkl");
  const std::string pickle = bytes.substr(pkl.offset, pkl.size);
  Unpickler up(pickle, path, sd.entries, prefix, path);
  const Obj* root = up.run();
  if (root->kind != Obj::Dict) throw Error("torch.save file does not hold a dict", path, "a state dict of tensors");
  for (const auto& [k, v] : root->dict) {
    if (k->kind != Obj::Str || v->kind != Obj::Tensor)
      throw Error("torch.save dict holds something other than name -> tensor", path, "a flat state dict of tensors",
                  k->kind == Obj::Str ? "a non-tensor value at '" + k->s + "'" : "a non-string key");
    sd.tensors.emplace_back(k->s, v->t);
  }
  return sd;
}

}  // namespace omniflux::torch_archive
