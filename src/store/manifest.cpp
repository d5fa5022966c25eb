#include "store/manifest.h"

#include <fmt/format.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "store/media_types.h"

namespace perch {
namespace {

using nlohmann::json;

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return text;
}

// "application/x; charset=utf-8" -> "application/x".
std::string_view BareMediaType(std::string_view content_type) {
  return Trim(content_type.substr(0, content_type.find(';')));
}

// RFC 6838's restricted-name, as the image spec's JSON schema writes it:
// ^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$
bool IsRestrictedName(std::string_view name) {
  constexpr std::string_view kAlphanumeric =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  if (name.empty() || name.size() > 127 || kAlphanumeric.find(name[0]) == std::string_view::npos) {
    return false;
  }
  return name.find_first_not_of(std::string(kAlphanumeric) + "!#$&^_.+-") == std::string_view::npos;
}

bool IsValidMediaType(std::string_view media_type) {
  const size_t slash = media_type.find('/');
  return slash != std::string_view::npos && IsRestrictedName(media_type.substr(0, slash)) &&
         IsRestrictedName(media_type.substr(slash + 1));
}

Result<std::string> OptionalString(const json& object, const char* key, std::string_view where) {
  const auto it = object.find(key);
  if (it == object.end()) {
    return std::string();
  }
  if (!it->is_string()) {
    return InvalidArgument(fmt::format("{}: \"{}\" must be a string", where, key));
  }
  return it->get<std::string>();
}

// A media type field: absent gives an empty string.
Result<std::string> OptionalMediaType(const json& object, const char* key, std::string_view where) {
  PERCH_ASSIGN_OR_RETURN(std::string media_type, OptionalString(object, key, where));
  if (!media_type.empty() && !IsValidMediaType(media_type)) {
    return InvalidArgument(
        fmt::format("{}: \"{}\" '{}' is not a media type (type/subtype)", where, key, media_type));
  }
  return media_type;
}

Result<std::map<std::string, std::string>> ParseAnnotations(const json& object,
                                                            std::string_view where) {
  std::map<std::string, std::string> annotations;
  const auto it = object.find("annotations");
  if (it == object.end()) {
    return annotations;
  }
  if (!it->is_object()) {
    return InvalidArgument(fmt::format("{}: \"annotations\" must be an object", where));
  }
  for (const auto& item : it->items()) {
    if (!item.value().is_string()) {
      return InvalidArgument(
          fmt::format("{}: annotation \"{}\" must be a string", where, item.key()));
    }
    annotations.emplace(item.key(), item.value().get<std::string>());
  }
  return annotations;
}

Result<Descriptor> ParseDescriptor(const json& value, std::string_view where) {
  if (!value.is_object()) {
    return InvalidArgument(fmt::format("{} must be a descriptor object", where));
  }
  PERCH_ASSIGN_OR_RETURN(std::string media_type, OptionalMediaType(value, "mediaType", where));
  if (media_type.empty()) {
    return InvalidArgument(fmt::format("{} needs a \"mediaType\"", where));
  }
  PERCH_ASSIGN_OR_RETURN(const std::string digest_text, OptionalString(value, "digest", where));
  auto digest = Digest::Parse(digest_text);
  if (!digest.ok()) {
    return InvalidArgument(fmt::format("{}: {}", where, digest.status().message()));
  }
  // An int64 in the spec: negative sizes and sizes past 2^63-1 are refused
  // alike, whichever of nlohmann's integer types holds them.
  const auto size = value.find("size");
  const bool valid_size =
      size != value.end() &&
      ((size->is_number_unsigned() &&
        size->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) ||
       (size->is_number_integer() && !size->is_number_unsigned() && size->get<int64_t>() >= 0));
  if (!valid_size) {
    return InvalidArgument(
        fmt::format("{} needs a \"size\" that is an integer from 0 to 2^63-1", where));
  }
  PERCH_ASSIGN_OR_RETURN(auto annotations, ParseAnnotations(value, where));
  PERCH_ASSIGN_OR_RETURN(std::string artifact_type,
                         OptionalMediaType(value, "artifactType", where));
  return Descriptor{.media_type = std::move(media_type),
                    .digest = std::move(digest).value(),
                    .size = size->get<uint64_t>(),
                    .annotations = std::move(annotations),
                    .artifact_type = std::move(artifact_type)};
}

Result<std::vector<Descriptor>> ParseDescriptors(const json& manifest, const char* key) {
  const auto it = manifest.find(key);
  if (it == manifest.end() || !it->is_array()) {
    return InvalidArgument(fmt::format("the manifest needs a \"{}\" array", key));
  }
  std::vector<Descriptor> descriptors;
  descriptors.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    PERCH_ASSIGN_OR_RETURN(Descriptor descriptor,
                           ParseDescriptor((*it)[i], fmt::format("{}[{}]", key, i)));
    descriptors.push_back(std::move(descriptor));
  }
  return descriptors;
}

// The media type from the "mediaType" field and what the caller was told;
// by the document's shape when neither says.
Result<std::string> MediaTypeOf(const json& manifest, std::string_view told) {
  PERCH_ASSIGN_OR_RETURN(const std::string field,
                         OptionalString(manifest, "mediaType", "manifest"));
  const std::string_view header = BareMediaType(told);
  if (!field.empty() && !header.empty() && field != header) {
    return InvalidArgument(fmt::format(
        "the manifest's mediaType '{}' differs from its Content-Type '{}'", field, header));
  }
  if (!field.empty()) {
    return field;
  }
  if (!header.empty()) {
    return std::string(header);
  }
  const bool has_config = manifest.contains("config");
  const bool has_manifests = manifest.contains("manifests");
  if (has_config && !has_manifests) {
    return std::string(media_type::kOciManifest);
  }
  if (has_manifests && !has_config) {
    return std::string(media_type::kOciIndex);
  }
  return InvalidArgument(
      "the manifest's media type is unknown: it has no \"mediaType\"; send a Content-Type");
}

}  // namespace

bool Manifest::IsIndex() const { return IsIndexMediaType(media_type); }

std::string Manifest::ReferrerArtifactType() const {
  if (!artifact_type.empty() || IsIndex()) {
    return artifact_type;
  }
  return config.media_type;
}

bool IsManifestMediaType(std::string_view media_type) {
  return media_type == media_type::kOciManifest || media_type == media_type::kDockerManifest;
}

bool IsIndexMediaType(std::string_view media_type) {
  return media_type == media_type::kOciIndex || media_type == media_type::kDockerManifestList;
}

Result<Manifest> ParseManifest(std::string_view media_type, std::string_view bytes) {
  // nlohmann's parser throws only when asked to; every access below checks
  // the type first.
  const json document = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) {
    return InvalidArgument("the manifest is not valid JSON");
  }
  if (!document.is_object()) {
    return InvalidArgument("the manifest must be a JSON object");
  }
  const auto schema = document.find("schemaVersion");
  if (schema == document.end() || !schema->is_number_integer() || schema->get<int64_t>() != 2) {
    return InvalidArgument("the manifest needs \"schemaVersion\": 2");
  }
  Manifest manifest;
  PERCH_ASSIGN_OR_RETURN(manifest.media_type, MediaTypeOf(document, media_type));
  const bool is_manifest = IsManifestMediaType(manifest.media_type);
  if (!is_manifest && !IsIndexMediaType(manifest.media_type)) {
    return InvalidArgument(
        fmt::format("unsupported manifest media type '{}': perch reads {}, {}, {} and {}",
                    manifest.media_type, media_type::kOciManifest, media_type::kOciIndex,
                    media_type::kDockerManifest, media_type::kDockerManifestList));
  }
  PERCH_ASSIGN_OR_RETURN(manifest.artifact_type,
                         OptionalMediaType(document, "artifactType", "manifest"));
  if (is_manifest) {
    const auto config = document.find("config");
    if (config == document.end()) {
      return InvalidArgument("the image manifest needs a \"config\" descriptor");
    }
    PERCH_ASSIGN_OR_RETURN(manifest.config, ParseDescriptor(*config, "config"));
    PERCH_ASSIGN_OR_RETURN(manifest.layers, ParseDescriptors(document, "layers"));
  } else {
    PERCH_ASSIGN_OR_RETURN(manifest.manifests, ParseDescriptors(document, "manifests"));
  }
  if (const auto subject = document.find("subject"); subject != document.end()) {
    PERCH_ASSIGN_OR_RETURN(manifest.subject, ParseDescriptor(*subject, "subject"));
  }
  PERCH_ASSIGN_OR_RETURN(manifest.annotations, ParseAnnotations(document, "manifest"));
  return manifest;
}

Result<Manifest> ParseImageManifest(std::string_view media_type, std::string_view bytes) {
  PERCH_ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(media_type, bytes));
  if (manifest.IsIndex()) {
    return InvalidArgument(
        "the reference names an image index (a list of manifests), not an image manifest");
  }
  return manifest;
}

}  // namespace perch
