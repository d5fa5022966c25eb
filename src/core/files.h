// Small file operations that must not leave a half-written file behind.
#pragma once

#include <filesystem>
#include <string_view>

#include "core/status.h"

namespace perch {

// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it
// over `path` and fsyncs the folder: a reader (or a restart after a crash)
// sees the old content or the new, never a mix. `mode` as for chmod.
// Internal (ResourceExhausted when the disk is full) naming the file.
Status WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes,
                           unsigned mode = 0644);

// The whole file, or NotFound / Internal.
Result<std::string> ReadFile(const std::filesystem::path& path);

}  // namespace perch
