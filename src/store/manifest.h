// Reads an OCI image manifest, OCI image index, Docker v2 manifest or Docker
// manifest list as pushed to the registry, checking what the registry must
// check before it stores one: known media type, Content-Type agreeing with
// the `mediaType` field, well-formed descriptors. Whether the blobs and
// child manifests exist is the registry's business, not this parser's.
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "store/descriptor.h"
#include "store/digest.h"

namespace perch {

struct ParsedManifest {
  std::string media_type;
  // The manifest's artifactType or, for an image manifest without one, its
  // config's media type: what the referrers API reports and filters on.
  std::string artifact_type;
  std::optional<Descriptor> subject;
  std::string annotations;            // the annotations object's JSON text, empty when none
  std::vector<Descriptor> blobs;      // config then layers (image manifests)
  std::vector<Descriptor> manifests;  // children (indexes and manifest lists)
};

bool IsManifestMediaType(std::string_view media_type);
bool IsIndexMediaType(std::string_view media_type);

// `content_type` is the request's Content-Type (parameters ignored; empty
// when absent). InvalidArgument, saying what is wrong, when the bytes are not
// JSON, the media type is unknown or differs from Content-Type, or a
// descriptor is malformed.
Result<ParsedManifest> ParseManifest(std::string_view content_type, std::string_view bytes);

}  // namespace perch
