#include "store/manifest.h"

#include <fmt/format.h>

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

Result<Descriptor> ParseDescriptor(const json& value, std::string_view where) {
  if (!value.is_object()) {
    return InvalidArgument(fmt::format("{} must be a descriptor object", where));
  }
  PERCH_ASSIGN_OR_RETURN(std::string media_type, OptionalString(value, "mediaType", where));
  if (media_type.empty()) {
    return InvalidArgument(fmt::format("{} needs a \"mediaType\"", where));
  }
  PERCH_ASSIGN_OR_RETURN(const std::string digest_text, OptionalString(value, "digest", where));
  auto digest = Digest::Parse(digest_text);
  if (!digest.ok()) {
    return InvalidArgument(fmt::format("{}: {}", where, digest.status().message()));
  }
  const auto size = value.find("size");
  if (size == value.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return InvalidArgument(
        fmt::format("{} needs a \"size\" that is a non-negative integer", where));
  }
  PERCH_ASSIGN_OR_RETURN(std::string artifact_type, OptionalString(value, "artifactType", where));
  return Descriptor{.media_type = std::move(media_type),
                    .digest = std::move(digest).value(),
                    .size = size->get<uint64_t>(),
                    .artifact_type = std::move(artifact_type)};
}

Result<std::vector<Descriptor>> ParseDescriptors(const json& manifest, const char* key,
                                                 bool required) {
  const auto it = manifest.find(key);
  if (it == manifest.end()) {
    if (required) {
      return InvalidArgument(fmt::format("the manifest needs a \"{}\" array", key));
    }
    return std::vector<Descriptor>();
  }
  if (!it->is_array()) {
    return InvalidArgument(fmt::format("\"{}\" must be an array", key));
  }
  std::vector<Descriptor> descriptors;
  for (size_t i = 0; i < it->size(); ++i) {
    PERCH_ASSIGN_OR_RETURN(Descriptor descriptor,
                           ParseDescriptor((*it)[i], fmt::format("{}[{}]", key, i)));
    descriptors.push_back(std::move(descriptor));
  }
  return descriptors;
}

}  // namespace

bool IsManifestMediaType(std::string_view media_type) {
  return media_type == media_type::kOciManifest || media_type == media_type::kDockerManifest;
}

bool IsIndexMediaType(std::string_view media_type) {
  return media_type == media_type::kOciIndex || media_type == media_type::kDockerManifestList;
}

Result<ParsedManifest> ParseManifest(std::string_view content_type, std::string_view bytes) {
  const json manifest = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded()) {
    return InvalidArgument("the manifest is not valid JSON");
  }
  if (!manifest.is_object()) {
    return InvalidArgument("the manifest must be a JSON object");
  }
  const auto schema = manifest.find("schemaVersion");
  if (schema == manifest.end() || !schema->is_number_integer() || schema->get<int64_t>() != 2) {
    return InvalidArgument("the manifest needs \"schemaVersion\": 2");
  }
  PERCH_ASSIGN_OR_RETURN(const std::string field,
                         OptionalString(manifest, "mediaType", "manifest"));
  const std::string_view header = BareMediaType(content_type);
  if (!field.empty() && !header.empty() && field != header) {
    return InvalidArgument(
        fmt::format("the manifest's mediaType '{}' differs from the request's Content-Type '{}'",
                    field, header));
  }
  ParsedManifest parsed;
  parsed.media_type = field.empty() ? std::string(header) : field;
  if (parsed.media_type.empty()) {
    return InvalidArgument("the manifest's media type is unknown: send a Content-Type");
  }
  const bool is_manifest = IsManifestMediaType(parsed.media_type);
  if (!is_manifest && !IsIndexMediaType(parsed.media_type)) {
    return InvalidArgument(
        fmt::format("unsupported manifest media type '{}': the registry accepts {}, {}, {} and {}",
                    parsed.media_type, media_type::kOciManifest, media_type::kOciIndex,
                    media_type::kDockerManifest, media_type::kDockerManifestList));
  }
  PERCH_ASSIGN_OR_RETURN(parsed.artifact_type,
                         OptionalString(manifest, "artifactType", "manifest"));
  if (is_manifest) {
    const auto config = manifest.find("config");
    if (config == manifest.end()) {
      return InvalidArgument("the image manifest needs a \"config\" descriptor");
    }
    PERCH_ASSIGN_OR_RETURN(Descriptor config_descriptor, ParseDescriptor(*config, "config"));
    if (parsed.artifact_type.empty()) {
      parsed.artifact_type = config_descriptor.media_type;
    }
    parsed.blobs.push_back(std::move(config_descriptor));
    PERCH_ASSIGN_OR_RETURN(std::vector<Descriptor> layers,
                           ParseDescriptors(manifest, "layers", /*required=*/true));
    for (Descriptor& layer : layers) {
      parsed.blobs.push_back(std::move(layer));
    }
  } else {
    PERCH_ASSIGN_OR_RETURN(parsed.manifests,
                           ParseDescriptors(manifest, "manifests", /*required=*/true));
  }
  if (const auto subject = manifest.find("subject"); subject != manifest.end()) {
    PERCH_ASSIGN_OR_RETURN(parsed.subject, ParseDescriptor(*subject, "subject"));
  }
  if (const auto annotations = manifest.find("annotations"); annotations != manifest.end()) {
    if (!annotations->is_object()) {
      return InvalidArgument("\"annotations\" must be an object");
    }
    for (const auto& [key, value] : annotations->items()) {
      if (!value.is_string()) {
        return InvalidArgument(fmt::format("annotation '{}' must be a string", key));
      }
    }
    parsed.annotations = annotations->dump();
  }
  return parsed;
}

}  // namespace perch
