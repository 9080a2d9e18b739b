#pragma once
// The plain C interface of the sentencepiece plugin (libomniflux_spm.so).
//
// Why a plugin: libsentencepiece exports its bundled protobuf-lite, whose symbols interpose on the
// libprotobuf that LibTorch loads and crash protobuf's static initialisers. The plugin is the only
// object that links libsentencepiece; libomniflux opens it with RTLD_LOCAL | RTLD_DEEPBIND, so
// sentencepiece binds to its own protobuf and nothing of it enters the global symbol scope.
// Only C types cross this boundary. Functions never throw; on failure they return a null pointer
// or a negative number, and omniflux_spm_last_error() describes the failure (per thread).
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OMNIFLUX_SPM_ABI_VERSION 1

typedef struct omniflux_spm omniflux_spm;

int omniflux_spm_abi_version(void);
const char* omniflux_spm_last_error(void);

omniflux_spm* omniflux_spm_load_file(const char* path);
omniflux_spm* omniflux_spm_load_bytes(const char* data, size_t size);
void omniflux_spm_free(omniflux_spm* model);

int32_t omniflux_spm_vocab_size(const omniflux_spm* model);
// which: 0 unk, 1 bos, 2 eos, 3 pad; -1 when the model has none.
int32_t omniflux_spm_special_id(const omniflux_spm* model, int which);

// Encodes UTF-8 text to piece ids. On success *ids is a malloc'ed array of *count ids that the
// caller releases with omniflux_spm_free_buffer. Returns 0 on success, -1 on error.
int omniflux_spm_encode(const omniflux_spm* model, const char* text, size_t size, int32_t** ids,
                        size_t* count);
// Decodes ids with sentencepiece's own rules. *text is malloc'ed (not NUL-terminated beyond
// *size, though a NUL follows). Returns 0 on success, -1 on error (for example an id out of range).
int omniflux_spm_decode(const omniflux_spm* model, const int32_t* ids, size_t count, char** text,
                        size_t* size);
// The piece string of an id, valid as long as the model lives; NULL when id is out of range.
const char* omniflux_spm_id_to_piece(const omniflux_spm* model, int32_t id, size_t* size);
// The id of an exact piece, or -1 when the vocabulary has no such piece.
int32_t omniflux_spm_piece_to_id(const omniflux_spm* model, const char* piece, size_t size);

void omniflux_spm_free_buffer(void* buffer);

#ifdef __cplusplus
}
#endif
