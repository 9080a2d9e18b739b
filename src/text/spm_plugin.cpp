#include "text/spm_plugin.h"

#include <cstdlib>
#include <dlfcn.h>

#include "omniflux/error.h"
#include "text/files.h"
#include "text/plugin/spm_plugin_abi.h"

namespace omniflux::text::detail {

namespace {
constexpr const char* kPluginName = "libomniflux_spm.so";
}

struct SpmApi {
  decltype(&omniflux_spm_abi_version) abi_version;
  decltype(&omniflux_spm_last_error) last_error;
  decltype(&omniflux_spm_load_file) load_file;
  decltype(&omniflux_spm_load_bytes) load_bytes;
  decltype(&omniflux_spm_free) free_model;
  decltype(&omniflux_spm_vocab_size) vocab_size;
  decltype(&omniflux_spm_special_id) special_id;
  decltype(&omniflux_spm_encode) encode;
  decltype(&omniflux_spm_decode) decode;
  decltype(&omniflux_spm_id_to_piece) id_to_piece;
  decltype(&omniflux_spm_piece_to_id) piece_to_id;
  decltype(&omniflux_spm_free_buffer) free_buffer;
};

std::string spm_plugin_path() {
  if (const char* dir = std::getenv("OMNIFLUX_PLUGIN_DIR"); dir && *dir) return join_path(dir, kPluginName);
  Dl_info info{};
  // Any symbol of libomniflux names the file the library was loaded from.
  if (dladdr(reinterpret_cast<void*>(&spm_plugin_path), &info) && info.dli_fname && *info.dli_fname) {
    return join_path(parent_dir(info.dli_fname), kPluginName);
  }
  return kPluginName;  // let the dynamic loader search
}

namespace {

struct Loaded {
  SpmApi api{};
  std::string error;  // non-empty when loading failed
};

const Loaded& loaded() {
  static const Loaded state = [] {
    Loaded s;
    const std::string path = spm_plugin_path();
    // RTLD_LOCAL keeps sentencepiece's bundled protobuf out of the global scope; RTLD_DEEPBIND
    // makes the plugin and libsentencepiece resolve their own symbols before LibTorch's
    // libprotobuf.
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h) {
      const char* e = dlerror();
      s.error = "cannot open " + path + ": " + (e ? e : "unknown error") +
                " (build the omniflux_spm target, or set OMNIFLUX_PLUGIN_DIR to the folder holding " +
                kPluginName + ")";
      return s;
    }
    bool ok = true;
    const auto sym = [&](const char* name) {
      void* p = dlsym(h, name);
      if (!p) {
        ok = false;
        if (s.error.empty()) s.error = path + " lacks the symbol " + name;
      }
      return p;
    };
#define OMNIFLUX_SPM_SYM(field, name) s.api.field = reinterpret_cast<decltype(s.api.field)>(sym(#name))
    OMNIFLUX_SPM_SYM(abi_version, omniflux_spm_abi_version);
    OMNIFLUX_SPM_SYM(last_error, omniflux_spm_last_error);
    OMNIFLUX_SPM_SYM(load_file, omniflux_spm_load_file);
    OMNIFLUX_SPM_SYM(load_bytes, omniflux_spm_load_bytes);
    OMNIFLUX_SPM_SYM(free_model, omniflux_spm_free);
    OMNIFLUX_SPM_SYM(vocab_size, omniflux_spm_vocab_size);
    OMNIFLUX_SPM_SYM(special_id, omniflux_spm_special_id);
    OMNIFLUX_SPM_SYM(encode, omniflux_spm_encode);
    OMNIFLUX_SPM_SYM(decode, omniflux_spm_decode);
    OMNIFLUX_SPM_SYM(id_to_piece, omniflux_spm_id_to_piece);
    OMNIFLUX_SPM_SYM(piece_to_id, omniflux_spm_piece_to_id);
    OMNIFLUX_SPM_SYM(free_buffer, omniflux_spm_free_buffer);
#undef OMNIFLUX_SPM_SYM
    if (ok && s.api.abi_version() != OMNIFLUX_SPM_ABI_VERSION) {
      s.error = path + " has ABI version " + std::to_string(s.api.abi_version()) + ", expected " +
                std::to_string(OMNIFLUX_SPM_ABI_VERSION);
    }
    // The handle stays open for the life of the process: models may outlive any owner.
    return s;
  }();
  return state;
}

}  // namespace

std::shared_ptr<SpmModel> SpmModel::load_file(const std::string& path) {
  const Loaded& l = loaded();
  if (!l.error.empty()) {
    throw Error("the sentencepiece plugin is not available", path, "a loadable " + std::string(kPluginName), l.error);
  }
  omniflux_spm* h = l.api.load_file(path.c_str());
  if (!h) throw Error("cannot load sentencepiece model", path, "a sentencepiece model file", l.api.last_error());
  return std::shared_ptr<SpmModel>(new SpmModel(&l.api, h, path));
}

SpmModel::~SpmModel() { api_->free_model(handle_); }

std::vector<int32_t> SpmModel::encode(std::string_view text) const {
  int32_t* ids = nullptr;
  size_t n = 0;
  if (api_->encode(handle_, text.data(), text.size(), &ids, &n) != 0) {
    throw Error("sentencepiece encode failed", where_, "ids", api_->last_error());
  }
  std::vector<int32_t> out(ids, ids + n);
  api_->free_buffer(ids);
  return out;
}

std::string SpmModel::decode(const std::vector<int32_t>& ids) const {
  char* text = nullptr;
  size_t n = 0;
  if (api_->decode(handle_, ids.data(), ids.size(), &text, &n) != 0) {
    throw Error("sentencepiece decode failed", where_, "valid ids", api_->last_error());
  }
  std::string out(text, n);
  api_->free_buffer(text);
  return out;
}

std::optional<std::string> SpmModel::id_to_piece(int32_t id) const {
  size_t n = 0;
  const char* p = api_->id_to_piece(handle_, id, &n);
  if (!p) return std::nullopt;
  return std::string(p, n);
}

std::optional<int32_t> SpmModel::piece_to_id(std::string_view piece) const {
  const int32_t id = api_->piece_to_id(handle_, piece.data(), piece.size());
  if (id < 0) return std::nullopt;
  return id;
}

int32_t SpmModel::size() const { return api_->vocab_size(handle_); }
int32_t SpmModel::special_id(int which) const { return api_->special_id(handle_, which); }

}  // namespace omniflux::text::detail
