#pragma once
// Whole-file writes that never leave a partial file behind.
#include <cstddef>
#include <string>

namespace omniflux {

// Writes `size` bytes to `path` through a temporary file in the same folder (".NAME.tmp-*") that is
// flushed, synced and renamed over `path`, so a failed or interrupted write leaves the old file, or
// none, never part of the new one. A symbolic link keeps pointing to its target, which is replaced.
// A path that exists and is not a regular file (/dev/null, /dev/stdout, a FIFO) is written in place
// instead, since it cannot be renamed over. Every failure (create, write, sync, close, rename) is
// an Error naming `path` and the system's reason; the temporary file is removed then.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace omniflux
