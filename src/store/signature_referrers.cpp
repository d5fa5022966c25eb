#include "store/signature_referrers.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>

#include "store/manifest.h"
#include "store/media_types.h"
#include "store/model_artifact.h"

namespace perch {
namespace {

using nlohmann::ordered_json;

// The OCI empty descriptor's content: cosign's bundles need no config.
constexpr std::string_view kEmptyConfig = "{}";

ordered_json DescriptorJson(const Descriptor& descriptor) {
  ordered_json value = {{"mediaType", descriptor.media_type},
                        {"digest", descriptor.digest.str()},
                        {"size", descriptor.size}};
  if (!descriptor.artifact_type.empty()) {
    value["artifactType"] = descriptor.artifact_type;
  }
  if (!descriptor.annotations.empty()) {
    value["annotations"] = descriptor.annotations;
  }
  return value;
}

// The referrers index of `subject`: from the referrers API, or from the
// tag schema when the registry has none. nullopt when there is none.
Result<std::optional<Manifest>> ReadReferrers(RegistryClient& client, const std::string& repository,
                                              const Digest& subject,
                                              const std::string& artifact_type, bool* from_api) {
  PERCH_ASSIGN_OR_RETURN(auto listed, client.GetReferrers(repository, subject, artifact_type));
  std::string bytes;
  *from_api = listed.has_value();
  if (listed) {
    bytes = std::move(*listed);
  } else {
    auto tagged = client.GetManifest(repository, ReferrersTagOf(subject));
    if (!tagged.ok() && tagged.status().code() == StatusCode::kNotFound) {
      return std::optional<Manifest>();
    }
    PERCH_RETURN_IF_ERROR(tagged.status());
    bytes = std::move(tagged->bytes);
  }
  auto index = ParseManifest(media_type::kOciIndex, bytes);
  if (!index.ok()) {
    return InvalidArgument(fmt::format("the referrers of {}/{}@{} are not an OCI index: {}",
                                       client.registry(), repository, subject.str(),
                                       index.status().message()));
  }
  return std::optional<Manifest>(std::move(index).value());
}

}  // namespace

std::string EncodeSignatureReferrer(const Descriptor& subject, const std::string& bundle) {
  const ordered_json manifest = {
      {"schemaVersion", 2},
      {"mediaType", media_type::kOciManifest},
      {"artifactType", kSigstoreBundleMediaType},
      {"config", DescriptorJson(Descriptor{std::string(media_type::kOciEmptyConfig),
                                           Sha256Of(kEmptyConfig), kEmptyConfig.size()})},
      {"layers", ordered_json::array({DescriptorJson(Descriptor{
                     std::string(kSigstoreBundleMediaType), Sha256Of(bundle), bundle.size()})})},
      {"subject", DescriptorJson(Descriptor{subject.media_type, subject.digest, subject.size})},
      {"annotations", {{"dev.sigstore.bundle.content", "dsse-envelope"}}},
  };
  return manifest.dump();
}

Result<Digest> AttachSignature(RegistryClient& client, const std::string& repository,
                               const Descriptor& subject, const std::string& bundle) {
  if (bundle.size() > kMaxSignatureBundleBytes) {
    return InvalidArgument(fmt::format("the signature is {} bytes, more than the {} allowed",
                                       bundle.size(), kMaxSignatureBundleBytes));
  }
  PERCH_RETURN_IF_ERROR(client.PushSmallBlob(repository, std::string(kEmptyConfig)).status());
  PERCH_RETURN_IF_ERROR(client.PushSmallBlob(repository, bundle).status());
  const std::string manifest = EncodeSignatureReferrer(subject, bundle);
  const Digest digest = Sha256Of(manifest);
  PERCH_RETURN_IF_ERROR(
      client.PutManifest(repository, digest.str(), manifest, std::string(media_type::kOciManifest))
          .status());
  bool from_api = false;
  PERCH_ASSIGN_OR_RETURN(auto index,
                         ReadReferrers(client, repository, subject.digest, "", &from_api));
  if (from_api) {
    return digest;  // the registry lists it by its subject
  }
  std::vector<Descriptor> entries = index ? index->manifests : std::vector<Descriptor>{};
  if (std::any_of(entries.begin(), entries.end(),
                  [&](const Descriptor& entry) { return entry.digest == digest; })) {
    return digest;
  }
  entries.push_back(Descriptor{.media_type = std::string(media_type::kOciManifest),
                               .digest = digest,
                               .size = manifest.size(),
                               .annotations = {{"dev.sigstore.bundle.content", "dsse-envelope"}},
                               .artifact_type = std::string(kSigstoreBundleMediaType)});
  ordered_json list = ordered_json::array();
  for (const auto& entry : entries) {
    list.push_back(DescriptorJson(entry));
  }
  const ordered_json updated = {
      {"schemaVersion", 2}, {"mediaType", media_type::kOciIndex}, {"manifests", list}};
  PERCH_RETURN_IF_ERROR(client
                            .PutManifest(repository, ReferrersTagOf(subject.digest), updated.dump(),
                                         std::string(media_type::kOciIndex))
                            .status());
  return digest;
}

Result<std::vector<FetchedSignature>> FetchSignatures(RegistryClient& client,
                                                      const std::string& repository,
                                                      const Digest& subject,
                                                      std::vector<std::string>* skipped) {
  const auto skip = [&](std::string why) {
    if (skipped != nullptr) {
      skipped->push_back(std::move(why));
    }
  };
  bool from_api = false;
  PERCH_ASSIGN_OR_RETURN(
      auto index,
      ReadReferrers(client, repository, subject, std::string(kSigstoreBundleMediaType), &from_api));
  std::vector<FetchedSignature> signatures;
  if (!index) {
    return signatures;
  }
  const size_t listed = std::min(index->manifests.size(), kMaxReferrersListed);
  if (index->manifests.size() > listed) {
    skip(fmt::format("{} referrers listed; only the first {} were looked at",
                     index->manifests.size(), listed));
  }
  for (size_t i = 0; i < listed; ++i) {
    const Descriptor& entry = index->manifests[i];
    if (entry.artifact_type != kSigstoreBundleMediaType) {
      continue;
    }
    if (signatures.size() == kMaxSignatureReferrers) {
      skip(fmt::format("more than {} signatures are attached; the rest were not fetched",
                       kMaxSignatureReferrers));
      break;
    }
    const std::string name = "signature " + entry.digest.str();
    if (entry.size > kMaxManifestBytes) {
      skip(name + ": its manifest is too large");
      continue;
    }
    auto fetched = client.GetManifest(repository, entry.digest.str());
    if (!fetched.ok() && (fetched.status().code() == StatusCode::kNotFound ||
                          fetched.status().code() == StatusCode::kInvalidArgument)) {
      skip(fmt::format("{}: {}", name, fetched.status().message()));
      continue;
    }
    PERCH_RETURN_IF_ERROR(fetched.status());
    auto manifest = ParseImageManifest(fetched->media_type, fetched->bytes);
    if (!manifest.ok()) {
      skip(fmt::format("{}: {}", name, manifest.status().message()));
      continue;
    }
    if (manifest->artifact_type != kSigstoreBundleMediaType || manifest->layers.size() != 1 ||
        manifest->layers[0].media_type != kSigstoreBundleMediaType) {
      skip(name + ": not one Sigstore bundle in cosign's layout");
      continue;
    }
    // A tag-schema index is only a tag anyone with push rights can move:
    // the referrer itself must name the manifest that was pulled.
    if (!manifest->subject || manifest->subject->digest != subject) {
      skip(name + ": its subject is another manifest");
      continue;
    }
    const Descriptor& layer = manifest->layers[0];
    if (layer.size > kMaxSignatureBundleBytes) {
      skip(fmt::format("{}: its bundle is {} bytes, more than the {} allowed", name, layer.size,
                       kMaxSignatureBundleBytes));
      continue;
    }
    auto bundle = client.FetchSmallBlob(repository, layer);
    if (!bundle.ok() && bundle.status().code() != StatusCode::kUnavailable) {
      skip(fmt::format("{}: {}", name, bundle.status().message()));
      continue;
    }
    PERCH_RETURN_IF_ERROR(bundle.status());
    signatures.push_back(FetchedSignature{entry.digest, std::move(bundle).value()});
  }
  return signatures;
}

}  // namespace perch
