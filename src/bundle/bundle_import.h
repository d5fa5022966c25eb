// Imports a location bundle into an agent's state folder, for an agent with
// no hub (`perch serve --bundles`), and tells the agent what to serve.
//
//   STATE/blobs/                     the BlobStore (shared with --model pulls)
//   STATE/bundle/releases/g<N>/      the repository served for generation N
//                                    (<name>/<version>/ with model.sig*): hard
//                                    links to the verified blobs
//   STATE/bundle/current.json        {"generation", "location", "release",
//                                    "models", "imported_at"}: what to serve,
//                                    and the generation a bundle must exceed
//   STATE/bundle/lock                one import at a time (flock)
//
// Import checks everything before it changes what is served: the tar
// (bundle_reader.h: every blob against its digest, as it streams), the
// index (every entry present, with its declared size), the state (DSSE,
// signed by a trusted key; its generation above the current one: a bundle
// replayed or older is refused), every model of the state (a perch model,
// every blob present with its declared size, name and version as the state
// says) and its signatures (at least one that verifies with a trusted key;
// one that is malformed or does not match the model's files refuses the
// bundle, one by another key is passed over). Only then is a release
// built and current.json replaced, in one rename.
//
// Threading: free functions; concurrent imports into one STATE wait for
// each other.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bundle/bundle_format.h"
#include "bundle/bundle_reader.h"
#include "core/status.h"
#include "signing/signing.h"
#include "store/blob_store.h"

namespace perch::bundle {

// What current.json says.
struct SiteState {
  int64_t generation = 0;
  std::string location;
  std::filesystem::path release;  // the repository to serve
  std::vector<StateModel> models;
  std::string imported_at;
  // At import only (not kept in current.json): each model's signature
  // bundles, blobs in STATE/blobs, by model name.
  std::map<std::string, std::vector<Digest>> signatures;
};

// nullopt when no bundle was ever imported; InvalidArgument for a
// current.json that is not perch's.
Result<std::optional<SiteState>> ReadSiteState(const std::filesystem::path& state);

struct ImportOptions {
  std::filesystem::path state;              // the agent's --state
  std::vector<signing::PublicKey> trusted;  // must not be empty
  ReaderLimits limits;
  // Runs once every check has passed, before current.json is replaced
  // (`perch bundle import --hub` pushes to the site's hub here); an error
  // refuses the bundle and nothing is recorded.
  std::function<Status(const SiteState&, const BlobStore&)> before_commit;
};

// The new site state; the error that refused the bundle otherwise (nothing
// served changed): InvalidArgument for content, Unauthenticated for a
// signature no trusted key makes, AlreadyExists for a generation not above
// the current one.
Result<SiteState> ImportBundle(const std::filesystem::path& bundle, const ImportOptions& options);

}  // namespace perch::bundle
