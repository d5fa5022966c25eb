#include "bundle/bundle_format.h"

#include <fmt/format.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "store/media_types.h"
#include "store/signature_referrers.h"

namespace perch::bundle {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

bool IsModelName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") {
    return false;
  }
  for (const char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

bool IsSeparator(char c) {
  return c == '-' || c == '.' || c == '_' || c == ':' || c == '@' || c == '+';
}

}  // namespace

std::string EncodeLocationState(const LocationState& state) {
  ordered_json models = ordered_json::array();
  for (const StateModel& model : state.models) {
    models.push_back({{"name", model.name},
                      {"version", model.version},
                      {"ref", model.ref},
                      {"digest", model.digest.str()}});
  }
  const ordered_json value = {{"location", state.location},
                              {"generation", state.generation},
                              {"created", state.created},
                              {"models", models}};
  return value.dump();
}

Result<LocationState> DecodeLocationState(std::string_view text) {
  const json value = json::parse(text, nullptr, false);
  if (!value.is_object()) {
    return InvalidArgument("the location state is not a JSON object");
  }
  LocationState state;
  if (!value.contains("generation") || !value["generation"].is_number_integer() ||
      value["generation"].get<int64_t>() < 1) {
    return InvalidArgument("the location state's \"generation\" must be an integer of 1 or more");
  }
  state.generation = value["generation"].get<int64_t>();
  if (value.contains("location") && value["location"].is_string()) {
    state.location = value["location"].get<std::string>();
  }
  if (value.contains("created") && value["created"].is_string()) {
    state.created = value["created"].get<std::string>();
  }
  if (!value.contains("models") || !value["models"].is_array()) {
    return InvalidArgument("the location state has no \"models\" list");
  }
  std::set<std::string> names;
  for (const json& entry : value["models"]) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !entry.contains("version") || !entry["version"].is_number_integer() ||
        !entry.contains("ref") || !entry["ref"].is_string() || !entry.contains("digest") ||
        !entry["digest"].is_string()) {
      return InvalidArgument(
          "each model of the location state needs \"name\", \"version\", \"ref\" and \"digest\"");
    }
    StateModel model;
    model.name = entry["name"].get<std::string>();
    model.version = entry["version"].get<int64_t>();
    model.ref = entry["ref"].get<std::string>();
    if (!IsModelName(model.name) || model.version < 1) {
      return InvalidArgument(
          fmt::format("the location state names model \"{}\" version {}: "
                      "not a valid model name and version",
                      model.name, model.version));
    }
    PERCH_ASSIGN_OR_RETURN(model.digest, Digest::Parse(entry["digest"].get<std::string>()));
    if (!names.insert(model.name).second) {
      return InvalidArgument(
          fmt::format("the location state places model \"{}\" twice", model.name));
    }
    state.models.push_back(std::move(model));
  }
  return state;
}

std::string EncodeStateManifest(const std::string& signed_state) {
  constexpr std::string_view kEmpty = "{}";
  const ordered_json manifest = {
      {"schemaVersion", 2},
      {"mediaType", media_type::kOciManifest},
      {"artifactType", kStateArtifactType},
      {"config",
       {{"mediaType", media_type::kOciEmptyConfig},
        {"digest", Sha256Of(kEmpty).str()},
        {"size", kEmpty.size()}}},
      {"layers", ordered_json::array({{{"mediaType", kSigstoreBundleMediaType},
                                       {"digest", Sha256Of(signed_state).str()},
                                       {"size", signed_state.size()}}})},
  };
  return manifest.dump();
}

bool IsValidRefName(std::string_view name) {
  if (name.empty() || name.size() > 255) {
    return false;
  }
  bool need_alnum = true;  // at the start, and after a separator or "/"
  for (const char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      need_alnum = false;
    } else if ((IsSeparator(c) || c == '/') && !need_alnum) {
      need_alnum = true;
    } else {
      return false;
    }
  }
  return !need_alnum;
}

Result<Manifest> ParseBundleIndex(std::string_view bytes) {
  auto index = ParseManifest(media_type::kOciIndex, bytes);
  if (!index.ok()) {
    return InvalidArgument("index.json: " + index.status().message());
  }
  std::set<std::string> refs;
  for (const Descriptor& entry : index->manifests) {
    if (entry.media_type != media_type::kOciManifest) {
      return InvalidArgument(fmt::format("index.json: entry {} is a {}, not an OCI image manifest",
                                         entry.digest.str(), entry.media_type));
    }
    const auto ref = entry.annotations.find(std::string(kRefNameAnnotation));
    if (ref == entry.annotations.end()) {
      continue;
    }
    if (!IsValidRefName(ref->second)) {
      return InvalidArgument(
          fmt::format("index.json: \"{}\" is not a valid ref name", ref->second));
    }
    if (!refs.insert(ref->second).second) {
      return InvalidArgument(fmt::format("index.json: ref name \"{}\" is used twice", ref->second));
    }
  }
  return std::move(index).value();
}

Status CheckLayoutFile(std::string_view bytes) {
  const json value = json::parse(bytes, nullptr, false);
  if (!value.is_object() || value.value("imageLayoutVersion", json()) != "1.0.0") {
    return InvalidArgument("oci-layout is not {\"imageLayoutVersion\": \"1.0.0\"}");
  }
  return Status::Ok();
}

}  // namespace perch::bundle
