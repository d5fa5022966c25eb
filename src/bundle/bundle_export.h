// Builds a location bundle from models already fetched into a BlobStore
// (store/model_puller.h's FetchModel: manifest, config, layers and
// signature bundles, all verified), with the location's state signed by
// `key` (DSSE, src/signing/).
//
// Threading: a free function; as thread-safe as the BlobStore.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "bundle/bundle_format.h"
#include "core/status.h"
#include "signing/signing.h"
#include "store/blob_store.h"
#include "store/model_puller.h"

namespace perch::bundle {

struct ExportModel {
  std::string ref;  // its ref name in the bundle (a valid IsValidRefName)
  FetchedModel model;
};

// Writes `out`. InvalidArgument for a bad ref name, a model name given
// twice or a generation below 1; the signer's and writer's errors.
// Returns the state that was signed.
Result<LocationState> ExportBundle(const std::filesystem::path& out, BlobStore& blobs,
                                   const std::vector<ExportModel>& models,
                                   const std::string& location, int64_t generation,
                                   const signing::PrivateKey& key);

// "host/repo:tag" without its host, as a ref name: "repo:tag" (a digest
// reference gives "repo@sha256:...").
std::string RefNameOf(const std::string& repository, const std::string& tag_or_digest);

}  // namespace perch::bundle
