// The OCI media types perch reads and writes. Model artifacts use the CNCF
// ModelPack types where they fit; docs/model-store.md says which and why.
#pragma once

#include <string_view>

namespace perch::media_type {

inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kOciEmptyConfig = "application/vnd.oci.empty.v1+json";

// A perch model version. perch's own type, not ModelPack's: ModelPack's
// config schema is closed (additionalProperties: false) and has no place for
// the inputs, outputs and model.json that an agent needs before it loads.
inline constexpr std::string_view kPerchModelArtifact = "application/vnd.perch.model.v1";
inline constexpr std::string_view kPerchModelConfig = "application/vnd.perch.model.config.v1+json";

// Layers are ModelPack's raw file types, so ModelPack-aware tools can unpack
// the files by their org.cncf.model.filepath annotation.
inline constexpr std::string_view kModelPackWeightRaw = "application/vnd.cncf.model.weight.v1.raw";
inline constexpr std::string_view kModelPackWeightConfigRaw =
    "application/vnd.cncf.model.weight.config.v1.raw";

}  // namespace perch::media_type

namespace perch::annotation {

inline constexpr std::string_view kTitle = "org.opencontainers.image.title";
inline constexpr std::string_view kVersion = "org.opencontainers.image.version";
inline constexpr std::string_view kModelPackFilepath = "org.cncf.model.filepath";
// On the manifest of a model that is not ONNX: its config's platform
// ("process"), so that a manifest without a model.onnx layer is not refused.
inline constexpr std::string_view kPerchPlatform = "dev.perch.model.platform";

}  // namespace perch::annotation
