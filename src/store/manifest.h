// The one reader of OCI manifests: image manifests and image indexes (and
// their Docker schema 2 equivalents), for the registry, which checks what is
// pushed before storing it, and for the client, which follows what it pulls.
// Both apply the same rules, those of the OCI image spec v1.1:
//
// - the document is a JSON object with "schemaVersion": 2;
// - its media type is the "mediaType" field, or else the one the caller was
//   told (a Content-Type), and the two must agree when both are present;
//   with neither, a document with "config" and no "manifests" is an image
//   manifest and one with "manifests" and no "config" an index;
// - an image manifest has a "config" descriptor and a "layers" array, an
//   index a "manifests" array; "artifactType" (a media type) and "subject"
//   (a descriptor) are optional in both; "annotations" is an object of
//   strings;
// - a descriptor has a "mediaType" (type/subtype as RFC 6838 and the spec's
//   JSON schema allow), a valid "digest", an integer "size" from 0 to
//   2^63-1, and optionally "annotations" (strings) and "artifactType";
// - unknown fields are ignored, as the spec requires.
//
// Whether the blobs and child manifests exist is the registry's business,
// and whether a manifest is a perch model is model_artifact.h's.
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "store/descriptor.h"

namespace perch {

struct Manifest {
  std::string media_type;             // as declared, or inferred as above
  std::string artifact_type;          // the "artifactType" field; empty when absent
  Descriptor config;                  // image manifests only
  std::vector<Descriptor> layers;     // image manifests only
  std::vector<Descriptor> manifests;  // indexes only
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;

  bool IsIndex() const;
  // What the referrers API reports and filters on: "artifactType" or, for
  // an image manifest without one, its config's media type.
  std::string ReferrerArtifactType() const;
};

bool IsManifestMediaType(std::string_view media_type);
bool IsIndexMediaType(std::string_view media_type);

// `media_type` is what the caller was told the document is (a request's or
// response's Content-Type, parameters ignored); empty when unknown.
// InvalidArgument, saying what is wrong, when the bytes are not JSON, the
// media type is unknown, unsupported or differs from the "mediaType" field,
// or a field breaks the rules above.
Result<Manifest> ParseManifest(std::string_view media_type, std::string_view bytes);

// ParseManifest, and InvalidArgument when the document is an index: for
// callers that need config and layers.
Result<Manifest> ParseImageManifest(std::string_view media_type, std::string_view bytes);

}  // namespace perch
