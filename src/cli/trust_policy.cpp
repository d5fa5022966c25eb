#include "cli/trust_policy.h"

#include <memory>
#include <utility>

#include "signing/signing.h"
#include "store/model_puller.h"

namespace perch::cli {

Result<VersionCheck> MakeTrustCheck(const std::vector<std::string>& trust_keys,
                                    const std::filesystem::path& state, const Logger& logger) {
  std::vector<std::filesystem::path> paths(trust_keys.begin(), trust_keys.end());
  PERCH_ASSIGN_OR_RETURN(auto keys, signing::LoadPublicKeys(paths));
  PERCH_ASSIGN_OR_RETURN(auto in_state, signing::LoadPublicKeysInFolder(state / "trust"));
  keys.insert(keys.end(), in_state.begin(), in_state.end());
  if (keys.empty()) {
    return VersionCheck(
        [](const std::string&, const std::filesystem::path&,
           const std::string& artifact_digest) -> Result<std::string> { return artifact_digest; });
  }
  std::string names;
  for (const auto& key : keys) {
    names += (names.empty() ? "" : ", ") + key.source();
  }
  logger.Info("trust policy: only models signed by one of {} key(s) serve ({})", keys.size(),
              names);
  auto trusted = std::make_shared<const std::vector<signing::PublicKey>>(std::move(keys));
  return VersionCheck([trusted](const std::string&, const std::filesystem::path& folder,
                                const std::string& artifact_digest) -> Result<std::string> {
    // The record a pull writes beside the model is perch's, not the model's.
    const signing::VerifyOptions options{.signature_path = {},
                                         .ignore_paths = {std::string(kArtifactRecordFile)}};
    auto verified = signing::VerifyModel(folder, *trusted, options);
    if (!verified.ok()) {
      const bool unsigned_model = verified.status().code() == StatusCode::kNotFound;
      return Status(StatusCode::kPermissionDenied,
                    std::string(unsigned_model ? "refused by the trust policy, unsigned: "
                                               : "refused by the trust policy: ") +
                        verified.status().message());
    }
    return artifact_digest.empty() ? verified->root_digest : artifact_digest;
  });
}

}  // namespace perch::cli
