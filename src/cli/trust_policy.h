// The agent's trust policy: with any trusted key (--trust-key, STATE/trust/
// *.pem), a model version serves only when its signature (model.sig in the
// version folder, docs/signing.md) verifies with one of them.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "models/model_manager.h"

namespace perch::cli {

// The check ModelManager runs before a version loads. With no trusted key it
// lets every version load and names it by the digest it was pulled as; with
// keys, it refuses unsigned versions, unknown keys and changed files, and
// names a version by its pulled digest or, for a local folder, its
// signature's root digest. NotFound / InvalidArgument naming a key file that
// cannot be read.
Result<VersionCheck> MakeTrustCheck(const std::vector<std::string>& trust_keys,
                                    const std::filesystem::path& state, const Logger& logger);

}  // namespace perch::cli
