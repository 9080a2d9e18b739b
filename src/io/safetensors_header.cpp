// The safetensors header parser. Validation follows the reference implementation
// (huggingface/safetensors, `SafeTensors::read_metadata` / `validate`): a sane header length, a JSON
// object header, known dtypes, offsets that tile the data region exactly (no gap, no overlap), and
// a byte length equal to dtype size x element count. Duplicate names are rejected too (the
// reference's map would silently keep one of them).
#include "omniflux/io/safetensors_format.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "omniflux/error.h"

using nlohmann::json;

namespace omniflux {

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

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

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

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& name) {
  SafetensorsHeader f;
  if (size < 8)
    throw Error("file too small to be safetensors", name, "at least 8 bytes",
                std::to_string(size) + " bytes");
  const uint64_t n = read_u64_le(data);
  if (n > SafetensorsHeader::kMaxHeaderBytes)
    throw Error("safetensors header length too large", name,
                "at most " + std::to_string(SafetensorsHeader::kMaxHeaderBytes), std::to_string(n));
  if (n > size - 8)
    throw Error("safetensors header length exceeds the file", name,
                "at most " + std::to_string(size - 8), std::to_string(n));
  const uint8_t* hdr = data + 8;
  if (n == 0 || hdr[0] != '{')
    throw Error("safetensors header does not start with '{'", name);
  if (!valid_utf8(hdr, n)) throw Error("safetensors header is not valid UTF-8", name);
  // The reference parses the header with serde_json::from_str, which accepts JSON whitespace
  // after the object (the format's padding is spaces) and rejects anything else, NUL padding
  // included ("trailing characters"). JSON text never holds a raw NUL, so one anywhere is an
  // error here too (nlohmann would otherwise stop at it and ignore the rest).
  if (const void* z = std::memchr(hdr, 0, n))
    throw Error("NUL byte in the safetensors header (pad with spaces)", name, "JSON padded with whitespace",
                "NUL at header byte " + std::to_string(static_cast<const uint8_t*>(z) - hdr));
  json j = parse_header_json(hdr, n, name);
  if (!j.is_object()) throw Error("safetensors header is not a JSON object", name);

  const uint64_t data_len = size - 8 - n;
  f.data_offset = 8 + n;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) throw Error("__metadata__ is not an object", name);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error("__metadata__ value is not a string", name + ": __metadata__." + m.key(),
                      "a string", m.value().dump());
        f.metadata[m.key()] = m.value().get<std::string>();
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
    f.tensors.push_back(std::move(t));
  }
  std::sort(f.tensors.begin(), f.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The tensors must tile [0, data_len) exactly: no gap, no overlap, nothing after the last.
  uint64_t cursor = 0;
  for (const auto& t : f.tensors) {
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
  return f;
}

}  // namespace omniflux
