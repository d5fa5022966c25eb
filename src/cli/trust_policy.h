// The agent's trust policy: with any trusted key (--trust-key, STATE/trust/
// *.pem), a model version serves only when its signature (model.sig in the
// version folder, docs/signing.md) verifies with one of them.
#pragma once

#include <cstddef>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "core/thread_annotations.h"
#include "fleet/fleet_types.h"
#include "models/model_manager.h"

namespace perch::cli {

// What the trust check said of each version it checked, by the digest it
// was pulled as, so that a fleet agent's heartbeat can say which key
// verified what it serves (or why it was refused). Keeps the newest
// kMaxEntries digests: a device serves far fewer versions than that.
//
// Threading: thread-safe (the check writes on the model manager's thread,
// the heartbeat reads on the agent's).
class SignatureRecord {
 public:
  static constexpr size_t kMaxEntries = 1024;

  void Record(const std::string& digest, SignatureState state) EXCLUDES(mutex_);
  std::optional<SignatureState> Find(const std::string& digest) const EXCLUDES(mutex_);

 private:
  mutable Mutex mutex_;
  std::map<std::string, SignatureState> states_ GUARDED_BY(mutex_);
  std::deque<std::string> order_ GUARDED_BY(mutex_);  // oldest first
};

// The check ModelManager runs before a version loads. With no trusted key it
// lets every version load and names it by the digest it was pulled as; with
// keys, it refuses unsigned versions, unknown keys and changed files, and
// names a version by its pulled digest or, for a local folder, its
// signature's root digest. Each pulled version's outcome goes to `record`
// when given. NotFound / InvalidArgument naming a key file that cannot be
// read.
Result<VersionCheck> MakeTrustCheck(const std::vector<std::string>& trust_keys,
                                    const std::filesystem::path& state, const Logger& logger,
                                    std::shared_ptr<SignatureRecord> record = nullptr);

}  // namespace perch::cli
