// `perch serve --model REF`: resolves each reference once, pulls it into
// the state folder's cache and installs it into STATE/models, the model
// repository the agent then serves. Falls back to the cache, with a
// warning, when a registry is out of reach or sends a bad update.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cli/registry_flags.h"
#include "core/log.h"
#include "core/status.h"

namespace perch::cli {

// The folder to serve (STATE/models). InvalidArgument for references that
// do not parse or that name the same model; the error of a reference that
// neither the registry nor the cache can provide.
Result<std::filesystem::path> PrepareModels(const std::vector<std::string>& references,
                                            const std::filesystem::path& state,
                                            const RegistryFlags& flags, const Logger& logger);

// Parses the references without pulling anything (--check-config).
Status CheckModelReferences(const std::vector<std::string>& references);

}  // namespace perch::cli
