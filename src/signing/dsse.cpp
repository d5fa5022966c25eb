// Sigstore bundles v0.3 holding a DSSE envelope: writing them, and reading
// them as untrusted input (every field checked for its type before use).
#include <array>
#include <nlohmann/json.hpp>

#include "core/base64.h"
#include "signing/internal.h"
#include "signing/signing.h"

namespace perch::signing {
namespace {

using nlohmann::json;

// The bundle media types that carry a DSSE envelope the way v0.3 does.
bool IsBundleMediaType(std::string_view type) {
  return type == kBundleMediaType || type == "application/vnd.dev.sigstore.bundle+json;version=0.3";
}

const json* Member(const json& object, const char* name) {
  if (!object.is_object()) {
    return nullptr;
  }
  const auto it = object.find(name);
  return it == object.end() ? nullptr : &*it;
}

Result<std::string> StringMember(const json& object, const char* name, std::string_view where) {
  const json* value = Member(object, name);
  if (value == nullptr || !value->is_string()) {
    return InvalidArgument("the signature is malformed: " + std::string(where) +
                           " has no string \"" + name + "\"");
  }
  return value->get<std::string>();
}

}  // namespace

std::string PreAuthEncoding(std::string_view payload_type, std::string_view payload) {
  std::string pae = "DSSEv1 " + std::to_string(payload_type.size()) + " ";
  pae.append(payload_type);
  pae += " " + std::to_string(payload.size()) + " ";
  pae.append(payload);
  return pae;
}

Result<std::string> SignDsse(std::string_view payload_type, std::string_view payload,
                             const PrivateKey& key) {
  PERCH_ASSIGN_OR_RETURN(const std::string signature,
                         SignBytes(key, PreAuthEncoding(payload_type, payload)));
  json bundle = {
      {"mediaType", kBundleMediaType},
      {"verificationMaterial",
       {{"publicKey", {{"hint", key.public_key().Hint()}}}, {"tlogEntries", json::array()}}},
      {"dsseEnvelope",
       {{"payload", Base64Encode(payload)},
        {"payloadType", payload_type},
        {"signatures", json::array({{{"sig", Base64Encode(signature)}, {"keyid", ""}}})}}},
  };
  return bundle.dump(2);
}

Result<VerifiedPayload> VerifyBundle(std::string_view bundle_json,
                                     const std::vector<PublicKey>& trusted,
                                     std::string_view expected_payload_type) {
  if (bundle_json.size() > kMaxBundleBytes) {
    return InvalidArgument("the signature is larger than " + std::to_string(kMaxBundleBytes >> 20) +
                           " MiB");
  }
  const json bundle = json::parse(bundle_json, nullptr, false);
  if (bundle.is_discarded() || !bundle.is_object()) {
    return InvalidArgument("the signature is not a JSON Sigstore bundle");
  }
  PERCH_ASSIGN_OR_RETURN(const std::string media_type,
                         StringMember(bundle, "mediaType", "the bundle"));
  if (!IsBundleMediaType(media_type)) {
    return InvalidArgument("the signature's media type is \"" + media_type + "\", not " +
                           std::string(kBundleMediaType));
  }
  const json* material = Member(bundle, "verificationMaterial");
  if (material == nullptr || !material->is_object()) {
    return InvalidArgument("the signature is malformed: no verificationMaterial");
  }
  if (Member(*material, "certificate") != nullptr ||
      Member(*material, "x509CertificateChain") != nullptr) {
    return InvalidArgument(
        "the signature carries a certificate (Sigstore keyless signing); perch verifies "
        "key-signed bundles only: sign with a key");
  }
  const json* public_key = Member(*material, "publicKey");
  if (public_key == nullptr || !public_key->is_object()) {
    return InvalidArgument("the signature is malformed: verificationMaterial has no publicKey");
  }
  const json* envelope = Member(bundle, "dsseEnvelope");
  if (envelope == nullptr || !envelope->is_object()) {
    return InvalidArgument("the signature holds no DSSE envelope (dsseEnvelope)");
  }
  PERCH_ASSIGN_OR_RETURN(const std::string payload_type,
                         StringMember(*envelope, "payloadType", "the DSSE envelope"));
  if (payload_type != expected_payload_type) {
    return InvalidArgument("the signature's payload type is \"" + payload_type + "\", not " +
                           std::string(expected_payload_type));
  }
  PERCH_ASSIGN_OR_RETURN(const std::string payload_b64,
                         StringMember(*envelope, "payload", "the DSSE envelope"));
  auto payload = Base64Decode(payload_b64);
  if (!payload.ok()) {
    return InvalidArgument("the signature is malformed: the DSSE payload is " +
                           payload.status().message());
  }
  const json* signatures = Member(*envelope, "signatures");
  if (signatures == nullptr || !signatures->is_array() || signatures->size() != 1) {
    return InvalidArgument(
        "the signature is malformed: a bundle's DSSE envelope holds exactly one signature");
  }
  PERCH_ASSIGN_OR_RETURN(const std::string sig_b64,
                         StringMember(signatures->front(), "sig", "the DSSE signature"));
  auto sig = Base64Decode(sig_b64);
  if (!sig.ok() || sig->empty()) {
    return InvalidArgument("the signature is malformed: the DSSE signature is not base64");
  }
  if (trusted.empty()) {
    return Status(StatusCode::kUnauthenticated, "no trusted key to verify the signature with");
  }
  const std::string pae = PreAuthEncoding(payload_type, *payload);
  for (const PublicKey& key : trusted) {
    if (VerifyBytes(key, pae, *sig)) {
      return VerifiedPayload{std::move(payload).value(), key.source()};
    }
  }
  std::string names;
  for (const PublicKey& key : trusted) {
    names += (names.empty() ? "" : ", ") + key.source();
  }
  return Status(StatusCode::kUnauthenticated,
                "the signature does not verify with any trusted key (" + names +
                    "): another key signed it, or the signed bytes were changed");
}

Result<std::string> VerifyDsse(std::string_view bundle_json, const std::vector<PublicKey>& trusted,
                               std::string_view expected_payload_type) {
  PERCH_ASSIGN_OR_RETURN(VerifiedPayload verified,
                         VerifyBundle(bundle_json, trusted, expected_payload_type));
  return std::move(verified.payload);
}

}  // namespace perch::signing
