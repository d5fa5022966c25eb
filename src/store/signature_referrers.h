// Model signatures as OCI referrers, in cosign's bundle layout
// (sigstore/cosign specs/BUNDLE_SPEC.md): a manifest with artifactType
// application/vnd.dev.sigstore.bundle.v0.3+json, the empty config, one layer
// holding the Sigstore bundle (the model's model.sig), and `subject` = the
// model's manifest. Registries with the referrers API list it by the
// subject's digest; for the others (Distribution 2.8) the tag-schema index
// "sha256-<hex>" is kept up to date, as cosign and ORAS do.
//
// What is fetched is only carried: whether a bundle holds a valid
// signature, and by whom, is src/signing/'s business.
//
// Threading: free functions; they use `client` from the calling thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "store/descriptor.h"
#include "store/registry_client.h"

namespace perch {

inline constexpr std::string_view kSigstoreBundleMediaType =
    "application/vnd.dev.sigstore.bundle.v0.3+json";

// Largest Sigstore bundle perch reads or pushes: an OMS bundle lists one
// digest per model file, so a few thousand files fit with room to spare.
inline constexpr uint64_t kMaxSignatureBundleBytes = uint64_t{1} << 20;
// At most this many signature referrers of one model are fetched: a
// registry (or whoever can push to it) cannot make a pull fetch without end.
inline constexpr size_t kMaxSignatureReferrers = 8;
// At most this many referrers of any type are looked at in an index.
inline constexpr size_t kMaxReferrersListed = 1024;

// The referrer manifest that attaches `bundle` to `subject` (deterministic:
// the same bundle and subject give the same digest).
std::string EncodeSignatureReferrer(const Descriptor& subject, const std::string& bundle);

// Pushes `bundle` as a referrer of `subject` (a manifest of `repository`),
// and, when the registry has no referrers API, adds it to the tag-schema
// index. Returns the referrer manifest's digest. InvalidArgument for a
// bundle over kMaxSignatureBundleBytes; the registry's errors otherwise.
Result<Digest> AttachSignature(RegistryClient& client, const std::string& repository,
                               const Descriptor& subject, const std::string& bundle);

// One Sigstore bundle attached to a model, as fetched and verified by digest.
struct FetchedSignature {
  Digest referrer = Sha256Of("");  // the referrer manifest
  std::string bundle;              // the bundle's bytes (its layer)
};

// The signature bundles attached to manifest `subject` of `repository`
// (the exact digest that was pulled), oldest first, at most
// kMaxSignatureReferrers. A referrer that is not in cosign's layout, names
// another subject or holds a bundle over kMaxSignatureBundleBytes is
// skipped and named in `skipped` (when given); only transport and registry
// errors fail the call. No referrers: an empty list.
Result<std::vector<FetchedSignature>> FetchSignatures(RegistryClient& client,
                                                      const std::string& repository,
                                                      const Digest& subject,
                                                      std::vector<std::string>* skipped = nullptr);

}  // namespace perch
