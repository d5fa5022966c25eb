#include "cli/trust_policy.h"

#include <algorithm>
#include <memory>
#include <system_error>
#include <utility>

#include "signing/signing.h"
#include "store/model_puller.h"

namespace perch::cli {
namespace {

// The signature files a version folder holds: a pulled model carries every
// signature its manifest had (model.sig, model.sig.2, ...).
std::vector<std::filesystem::path> SignatureFiles(const std::filesystem::path& folder) {
  std::vector<std::filesystem::path> signatures;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(folder, error)) {
    if (IsSignatureFileName(entry.path().filename().string())) {
      signatures.push_back(entry.path());
    }
  }
  std::sort(signatures.begin(), signatures.end());
  return signatures;
}

}  // namespace

void SignatureRecord::Record(const std::string& digest, SignatureState state) {
  MutexLock lock(mutex_);
  if (states_.insert_or_assign(digest, std::move(state)).second) {
    order_.push_back(digest);
  }
  if (order_.size() > kMaxEntries) {
    states_.erase(order_.front());
    order_.pop_front();
  }
}

std::optional<SignatureState> SignatureRecord::Find(const std::string& digest) const {
  MutexLock lock(mutex_);
  const auto found = states_.find(digest);
  return found == states_.end() ? std::nullopt : std::optional(found->second);
}

Result<VersionCheck> MakeTrustCheck(const std::vector<std::string>& trust_keys,
                                    const std::filesystem::path& state, const Logger& logger,
                                    std::shared_ptr<SignatureRecord> record) {
  std::vector<std::filesystem::path> paths(trust_keys.begin(), trust_keys.end());
  PERCH_ASSIGN_OR_RETURN(auto keys, signing::LoadPublicKeys(paths));
  PERCH_ASSIGN_OR_RETURN(auto in_state, signing::LoadPublicKeysInFolder(state / "trust"));
  keys.insert(keys.end(), in_state.begin(), in_state.end());
  // Only pulled versions are recorded: they are what a fleet agent reports.
  const auto note = [record](const std::string& digest, SignatureState signature) {
    if (record && !digest.empty()) {
      record->Record(digest, std::move(signature));
    }
  };
  if (keys.empty()) {
    return VersionCheck([note](const std::string&, const std::filesystem::path& folder,
                               const std::string& artifact_digest) -> Result<std::string> {
      note(artifact_digest,
           SignatureState{.state = SignatureFiles(folder).empty() ? "unsigned" : "signed"});
      return artifact_digest;
    });
  }
  std::string names;
  for (const auto& key : keys) {
    names += (names.empty() ? "" : ", ") + key.source();
  }
  logger.Info("trust policy: only models signed by one of {} key(s) serve ({})", keys.size(),
              names);
  auto trusted = std::make_shared<const std::vector<signing::PublicKey>>(std::move(keys));
  return VersionCheck([trusted, note](const std::string&, const std::filesystem::path& folder,
                                      const std::string& artifact_digest) -> Result<std::string> {
    // The record a pull writes beside the signatures is perch's, not the
    // model's.
    auto verified = signing::VerifyModelSignatures(folder, SignatureFiles(folder), *trusted,
                                                   {folder / kArtifactRecordFile});
    if (!verified.ok()) {
      note(artifact_digest, SignatureState{.state = "refused"});
      const bool unsigned_model = verified.status().code() == StatusCode::kNotFound;
      return Status(StatusCode::kPermissionDenied,
                    std::string(unsigned_model ? "refused by the trust policy, unsigned: "
                                               : "refused by the trust policy: ") +
                        verified.status().message());
    }
    const auto key = std::find_if(trusted->begin(), trusted->end(), [&](const auto& candidate) {
      return candidate.source() == verified->key_source;
    });
    note(artifact_digest,
         SignatureState{.state = "verified",
                        .key = std::filesystem::path(verified->key_source).filename().string(),
                        .key_sha256 = key == trusted->end() ? std::string() : key->Hint()});
    return artifact_digest.empty() ? verified->root_digest : artifact_digest;
  });
}

}  // namespace perch::cli
