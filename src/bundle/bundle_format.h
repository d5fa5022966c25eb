// Location bundles (docs/edge-cloud.md): one tar file in OCI image-layout
// form that carries a site's whole desired state.
//
//   oci-layout                 {"imageLayoutVersion": "1.0.0"}
//   index.json                 an OCI index: every model manifest (named by
//                              org.opencontainers.image.ref.name), their
//                              signature referrers, and the state manifest
//   blobs/sha256/<hex>         manifests, configs, layers, signatures, state
//
// The state manifest (artifactType application/vnd.perch.location-state.v1+json,
// ref name "perch-location-state") has one layer: a Sigstore bundle holding a
// DSSE envelope over the LocationState JSON (payload type = the artifact
// type), signed through src/signing/.
//
// Plain data and pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "store/descriptor.h"
#include "store/manifest.h"

namespace perch::bundle {

inline constexpr std::string_view kStateArtifactType =
    "application/vnd.perch.location-state.v1+json";
inline constexpr std::string_view kStateRefName = "perch-location-state";
inline constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";
inline constexpr std::string_view kLayoutFile = "oci-layout";
inline constexpr std::string_view kIndexFile = "index.json";
inline constexpr std::string_view kLayoutJson = R"({"imageLayoutVersion":"1.0.0"})";

// One model of a location's desired state.
struct StateModel {
  std::string name;              // the model's name
  int64_t version = 0;           // its version
  std::string ref;               // its ref name in the bundle (the reference it was exported from)
  Digest digest = Sha256Of("");  // its manifest
};

// What a location should run. `generation` only grows: an agent applies a
// bundle only when its generation is above the one it runs.
struct LocationState {
  std::string location;
  int64_t generation = 0;
  std::string created;  // RFC 3339, UTC
  std::vector<StateModel> models;
};

std::string EncodeLocationState(const LocationState& state);
// InvalidArgument naming the field that is missing or wrong (a model named
// twice, a generation below 1, a bad model name or digest).
Result<LocationState> DecodeLocationState(std::string_view json);

// The state manifest for a DSSE bundle `signed_state` (its one layer).
std::string EncodeStateManifest(const std::string& signed_state);

// A ref name as OCI image-layout allows it: components of [A-Za-z0-9] with
// the separators [-._:@+] between them, joined by "/", at most 255 bytes.
bool IsValidRefName(std::string_view name);

// The index.json of a bundle, checked: an OCI index whose entries are image
// manifests; at most one entry per ref name. InvalidArgument otherwise.
Result<Manifest> ParseBundleIndex(std::string_view bytes);
// InvalidArgument unless `bytes` is an oci-layout file of version 1.0.0.
Status CheckLayoutFile(std::string_view bytes);

}  // namespace perch::bundle
