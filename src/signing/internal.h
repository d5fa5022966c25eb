// What the files of src/signing share and nothing outside it includes:
// base64, the DSSE pre-authentication encoding, raw ECDSA sign / verify and
// the parsed bundle. Threading: stateless functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "signing/signing.h"

namespace perch::signing {

struct KeyAccess {
  static const PublicKey::Key& Of(const PublicKey& key) { return *key.key_; }
  static const PrivateKey::Key& Of(const PrivateKey& key) { return *key.key_; }
};

std::string HexOf(std::string_view bytes);
// The sha256 of `bytes`, 32 raw bytes.
std::string Sha256Raw(std::string_view bytes);

// "DSSEv1 <len> <type> <len> <body>", what DSSE signs.
std::string PreAuthEncoding(std::string_view payload_type, std::string_view payload);

// A DER ECDSA signature over `message` with the hash of the key's curve.
Result<std::string> SignBytes(const PrivateKey& key, std::string_view message);
// True when `signature` (DER) holds for `message` under `key`.
bool VerifyBytes(const PublicKey& key, std::string_view message, std::string_view signature);

// The payload of a bundle whose one DSSE signature holds under one of
// `trusted`, with the key that verified it.
struct VerifiedPayload {
  std::string payload;
  std::string key_source;
};
Result<VerifiedPayload> VerifyBundle(std::string_view bundle_json,
                                     const std::vector<PublicKey>& trusted,
                                     std::string_view expected_payload_type);

// Signatures larger than this are refused before parsing (a model with
// 100 000 files is about 15 MB of statement).
inline constexpr size_t kMaxBundleBytes = 64u << 20;

}  // namespace perch::signing
