// Pulling model versions out of a registry and installing them into a model
// repository folder (REPO/<name>/<version>/... + REPO/<name>/model.json),
// for `perch pull` and for the agent (`perch serve --model REF`).
//
// Every blob goes through a BlobStore first, verified; installing copies
// verified blobs into a staging folder and renames it into place, so a
// reader of the repository sees the old version folder or the new one,
// never a mix. Each installed version folder holds `.perch-artifact.json`
// ({"reference", "digest"}): what it was installed from.
//
// Threading: the free functions are as thread-safe as the BlobStore and
// RegistryClient they are given; a ModelPuller is used by one thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "store/blob_store.h"
#include "store/model_artifact.h"
#include "store/reference.h"
#include "store/registry_client.h"

namespace perch {

// The name of the file recording what a version folder was installed from.
inline constexpr std::string_view kArtifactRecordFile = ".perch-artifact.json";

// The name an installed version folder gives the first signature bundle
// attached to its manifest (what `perch sign` writes and `perch verify`
// reads); further ones are model.sig.2, model.sig.3, ... (see
// SignatureFileName). None of them is a file of the model.
inline constexpr std::string_view kSignatureFile = "model.sig";

// "model.sig" for i = 0, "model.sig.<i+1>" after.
std::string SignatureFileName(size_t i);
// True for the names SignatureFileName gives.
bool IsSignatureFileName(std::string_view name);

// A model version whose manifest, config and layers are in a BlobStore.
struct FetchedModel {
  Digest digest = Sha256Of("");  // of the manifest
  ModelArtifact artifact;
  ModelMetadata metadata;
  // The Sigstore bundles attached to the manifest (signature_referrers.h),
  // stored as blobs in the same BlobStore, oldest first.
  std::vector<Digest> signatures;
  // Referrers that were skipped, and why (not in cosign's layout, too large).
  std::vector<std::string> signature_notes;
};

// Resolves `reference` (tag or digest) on `client`'s registry and fetches
// everything into `blobs`, verified; the manifest is stored there too, so
// LoadCachedModel can find it offline. The signatures attached to the
// manifest are fetched by the digest of the manifest that was read, so a
// tag moved in between cannot pair one model with another's signature. `progress` sees the bytes of
// all layers together. Errors: the registry's (Unavailable, NotFound, ...), or InvalidArgument for
// content that fails verification or is not a model.
Result<FetchedModel> FetchModel(RegistryClient& client, const Reference& reference,
                                BlobStore& blobs, const TransferProgress& progress = nullptr);

// The step models a pipeline (`pipeline`, fetched from `reference`) pins,
// each fetched by its digest from the repository beside the pipeline's
// (pipeline_artifact.h), verified, with its signatures, and checked to be
// the model and version the pipeline names. Errors name the pipeline, the
// step and the pinned reference: NotFound for a digest the registry does
// not hold, InvalidArgument for bytes that fail verification.
Result<std::vector<FetchedModel>> FetchPipelineSteps(RegistryClient& client,
                                                     const Reference& reference,
                                                     const FetchedModel& pipeline, BlobStore& blobs,
                                                     const TransferProgress& progress = nullptr);

// The model whose manifest `digest` is in `blobs`, with all its blobs and
// the signature bundles `signatures`. NotFound when any of them is missing.
Result<FetchedModel> LoadCachedModel(const BlobStore& blobs, const Digest& digest,
                                     const std::vector<Digest>& signatures = {});

// Installs `model` into `root`/<name>/<version>/ (and <name>/model.json, or
// removes a model.json when the model has none), its signatures as
// model.sig, model.sig.2, ... A version folder that already records the
// same manifest digest and signatures is left as is (returns false);
// otherwise the new folder replaces it in one rename (returns true).
Result<bool> InstallModel(const BlobStore& blobs, const FetchedModel& model,
                          const std::filesystem::path& root, const std::string& reference);

// The manifest digest a version folder records, if it records one.
std::optional<Digest> InstalledDigest(const std::filesystem::path& version_folder);

// What the agent knows about one --model reference.
struct PulledRecord {
  std::string reference;  // as given, e.g. "127.0.0.1:5000/wakeword/hey_jarvis:1"
  Digest digest = Sha256Of("");
  std::string model;
  int64_t version = 0;
  std::string pulled_at;           // RFC 3339, UTC
  std::vector<Digest> signatures;  // the signature bundles attached to `digest`
};

// How ModelPuller::Sync got a model.
struct SyncOutcome {
  PulledRecord record;
  bool from_cache = false;                   // the registry could not give it; the cache did
  bool installed = false;                    // a version folder was (re)written
  Status registry_status;                    // why the registry could not give it, when from_cache
  std::vector<std::string> signature_notes;  // signature referrers skipped, and why
  // A pipeline's step models, synced (and recorded) by their pinned
  // references before the pipeline is installed; empty for other models.
  std::vector<SyncOutcome> steps;
};

// The agent's model cache in STATE:
//   STATE/blobs/            BlobStore (blobs by digest, shared between models;
//                           partial downloads under writing/)
//   STATE/models/           the model repository the agent serves
//   STATE/pulled.json       reference -> digest, model, version (written atomically)
class ModelPuller {
 public:
  // Creates the folders. Internal when it cannot; InvalidArgument for a
  // pulled.json that is not perch's.
  static Result<std::unique_ptr<ModelPuller>> Open(const std::filesystem::path& state);

  // Resolves `reference` once, fetches and installs it, and records the
  // digest. When the registry cannot be reached or sends something that
  // fails verification, falls back to what pulled.json recorded for this
  // reference (reinstalling it from the cache when needed), and says so in
  // the outcome; the error when there is nothing to fall back to. A
  // pipeline's pinned step models are synced first (each by its digest
  // reference); a step that cannot be had fails the pipeline's sync the
  // way its own manifest would (the recorded pipeline stands in).
  Result<SyncOutcome> Sync(RegistryClient& client, const Reference& reference,
                           const TransferProgress& progress = nullptr);

  // Removes every model folder under models/ that is not in `keep`, and
  // every version folder of a kept model other than its recorded version:
  // the models folder then holds exactly what the references resolved to.
  Status Prune(const std::map<std::string, int64_t>& keep);

  const std::filesystem::path& models_folder() const { return models_; }
  const std::map<std::string, PulledRecord>& records() const { return records_; }

 private:
  ModelPuller(std::filesystem::path state, std::unique_ptr<BlobStore> blobs,
              std::map<std::string, PulledRecord> records);
  Status SaveRecords() const;
  // Syncs the steps `model` pins when it is a pipeline; none otherwise.
  Result<std::vector<SyncOutcome>> SyncSteps(RegistryClient& client, const Reference& reference,
                                             const FetchedModel& model,
                                             const TransferProgress& progress);

  const std::filesystem::path state_;
  const std::filesystem::path models_;
  std::unique_ptr<BlobStore> blobs_;
  std::map<std::string, PulledRecord> records_;
};

}  // namespace perch
