#pragma once
// Files named by users and by model folders. A FIFO, device or socket given as a weight, image or
// config file is refused before it is read (reading one could block forever), and a path read from
// a config stays inside the model folder unless RuntimeOptions::allow_outside_paths says otherwise.
#include <string>

namespace omniflux {

// Throws Error naming `path` and `what` ("image", "weights"...) when it is missing or is not a
// regular file (after following symlinks).
void require_regular_file(const std::string& path, const std::string& what);

// The model-folder checks of the loaders and tools, one message each. require_folder throws Error
// "<what> folder not found" (missing, unreadable) or "<what> is not a folder", naming `path`.
// require_file returns `folder`/`name` when it is a regular file, else throws Error "the <what>
// folder lacks <name>" (or "... is not a regular file"), naming the file's path.
void require_folder(const std::string& path, const std::string& what);
std::string require_file(const std::string& folder, const std::string& name, const std::string& what);

// `relative` (a path read from a config of `folder`, `where` naming the file and field) joined to
// `folder`. Unless `allow_outside`, an absolute path, or one whose canonical form (symlinks
// resolved) leaves the canonical folder, is an Error.
std::string resolve_in_folder(const std::string& folder, const std::string& relative, const std::string& where,
                              bool allow_outside);

}  // namespace omniflux
