// libomniflux_spm: the only object that links libsentencepiece. See spm_plugin_abi.h for why.
// Built as a separate module (the .cc suffix keeps it out of the library's src/*.cpp glob).
#include "spm_plugin_abi.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

#define OMNIFLUX_SPM_EXPORT extern "C" __attribute__((visibility("default")))

struct omniflux_spm {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

thread_local std::string g_last_error;

void set_error(std::string message) { g_last_error = std::move(message); }

omniflux_spm* finish_load(std::unique_ptr<omniflux_spm> model, const sentencepiece::util::Status& st,
                          const std::string& source) {
  if (!st.ok()) {
    set_error("sentencepiece could not load " + source + ": " + st.ToString());
    return nullptr;
  }
  if (model->sp.GetPieceSize() <= 0) {
    set_error("sentencepiece model " + source + " has no pieces");
    return nullptr;
  }
  return model.release();
}

}  // namespace

OMNIFLUX_SPM_EXPORT int omniflux_spm_abi_version(void) { return OMNIFLUX_SPM_ABI_VERSION; }

OMNIFLUX_SPM_EXPORT const char* omniflux_spm_last_error(void) { return g_last_error.c_str(); }

OMNIFLUX_SPM_EXPORT omniflux_spm* omniflux_spm_load_file(const char* path) {
  try {
    auto model = std::make_unique<omniflux_spm>();
    const auto st = model->sp.Load(path);
    return finish_load(std::move(model), st, std::string(path));
  } catch (const std::exception& e) {
    set_error(std::string("sentencepiece load failed: ") + e.what());
  } catch (...) {
    set_error("sentencepiece load failed with an unknown exception");
  }
  return nullptr;
}

OMNIFLUX_SPM_EXPORT omniflux_spm* omniflux_spm_load_bytes(const char* data, size_t size) {
  try {
    auto model = std::make_unique<omniflux_spm>();
    const auto st = model->sp.LoadFromSerializedProto(std::string(data, size));
    return finish_load(std::move(model), st, "a serialized model of " + std::to_string(size) + " bytes");
  } catch (const std::exception& e) {
    set_error(std::string("sentencepiece load failed: ") + e.what());
  } catch (...) {
    set_error("sentencepiece load failed with an unknown exception");
  }
  return nullptr;
}

OMNIFLUX_SPM_EXPORT void omniflux_spm_free(omniflux_spm* model) { delete model; }

OMNIFLUX_SPM_EXPORT int32_t omniflux_spm_vocab_size(const omniflux_spm* model) {
  return model ? model->sp.GetPieceSize() : -1;
}

OMNIFLUX_SPM_EXPORT int32_t omniflux_spm_special_id(const omniflux_spm* model, int which) {
  if (!model) return -1;
  switch (which) {
    case 0: return model->sp.unk_id();
    case 1: return model->sp.bos_id();
    case 2: return model->sp.eos_id();
    case 3: return model->sp.pad_id();
    default: return -1;
  }
}

OMNIFLUX_SPM_EXPORT int omniflux_spm_encode(const omniflux_spm* model, const char* text, size_t size,
                                            int32_t** ids, size_t* count) {
  *ids = nullptr;
  *count = 0;
  try {
    std::vector<int> out;
    const auto st = model->sp.Encode(std::string(text, size), &out);
    if (!st.ok()) {
      set_error("sentencepiece encode failed: " + st.ToString());
      return -1;
    }
    auto* buf = static_cast<int32_t*>(std::malloc(sizeof(int32_t) * (out.empty() ? 1 : out.size())));
    if (!buf) {
      set_error("out of memory");
      return -1;
    }
    for (size_t i = 0; i < out.size(); ++i) buf[i] = static_cast<int32_t>(out[i]);
    *ids = buf;
    *count = out.size();
    return 0;
  } catch (const std::exception& e) {
    set_error(std::string("sentencepiece encode failed: ") + e.what());
  } catch (...) {
    set_error("sentencepiece encode failed with an unknown exception");
  }
  return -1;
}

OMNIFLUX_SPM_EXPORT int omniflux_spm_decode(const omniflux_spm* model, const int32_t* ids, size_t count,
                                            char** text, size_t* size) {
  *text = nullptr;
  *size = 0;
  try {
    const int n = model->sp.GetPieceSize();
    std::vector<int> in(count);
    for (size_t i = 0; i < count; ++i) {
      // sentencepiece aborts on out-of-range ids in some versions; check here instead.
      if (ids[i] < 0 || ids[i] >= n) {
        set_error("id " + std::to_string(ids[i]) + " is outside the vocabulary [0, " + std::to_string(n) + ")");
        return -1;
      }
      in[i] = ids[i];
    }
    std::string out;
    const auto st = model->sp.Decode(in, &out);
    if (!st.ok()) {
      set_error("sentencepiece decode failed: " + st.ToString());
      return -1;
    }
    auto* buf = static_cast<char*>(std::malloc(out.size() + 1));
    if (!buf) {
      set_error("out of memory");
      return -1;
    }
    std::memcpy(buf, out.data(), out.size());
    buf[out.size()] = '\0';
    *text = buf;
    *size = out.size();
    return 0;
  } catch (const std::exception& e) {
    set_error(std::string("sentencepiece decode failed: ") + e.what());
  } catch (...) {
    set_error("sentencepiece decode failed with an unknown exception");
  }
  return -1;
}

OMNIFLUX_SPM_EXPORT const char* omniflux_spm_id_to_piece(const omniflux_spm* model, int32_t id, size_t* size) {
  if (!model || id < 0 || id >= model->sp.GetPieceSize()) {
    set_error("id " + std::to_string(id) + " is outside the vocabulary");
    return nullptr;
  }
  const std::string& piece = model->sp.IdToPiece(id);
  if (size) *size = piece.size();
  return piece.c_str();
}

OMNIFLUX_SPM_EXPORT int32_t omniflux_spm_piece_to_id(const omniflux_spm* model, const char* piece, size_t size) {
  if (!model) return -1;
  try {
    const std::string p(piece, size);
    // PieceToId answers unk_id for unknown pieces; tell those apart from the real <unk> piece.
    const int id = model->sp.PieceToId(p);
    if (id < 0 || id >= model->sp.GetPieceSize() || model->sp.IdToPiece(id) != p) return -1;
    return id;
  } catch (...) {
    return -1;
  }
}

OMNIFLUX_SPM_EXPORT void omniflux_spm_free_buffer(void* buffer) { std::free(buffer); }
