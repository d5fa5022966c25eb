// Model signatures in the OpenSSF Model Signing (OMS) v1.0 format, and the
// DSSE envelopes they are made of, signed and verified offline with ECDSA
// keys (P-256 / SHA-256, P-384 / SHA-384, P-521 / SHA-512) via OpenSSL 3.
//
// A signature is a Sigstore bundle v0.3
// (application/vnd.dev.sigstore.bundle.v0.3+json) holding one DSSE envelope
// (payload type application/vnd.in-toto+json, signed over the DSSE
// pre-authentication encoding). For a model the payload is an in-toto
// Statement v1 with predicate type https://model_signing/signature/v1.0:
// the sha256 of every file in predicate.resources, and in the subject the
// root digest, the sha256 of the file digests concatenated in name order.
// Cosign's key-signed bundles (predicate https://sigstore.dev/cosign/sign/v1,
// subject = an OCI manifest digest) go through the same verifier.
//
// The key named in a bundle's verification material (`hint` or `rawBytes`)
// is never trusted to pick the key: every trusted key is tried.
//
// Threading: keys are immutable values, safe to share between threads; the
// functions keep no state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace perch::signing {

inline constexpr std::string_view kBundleMediaType =
    "application/vnd.dev.sigstore.bundle.v0.3+json";
inline constexpr std::string_view kInTotoPayloadType = "application/vnd.in-toto+json";
inline constexpr std::string_view kModelSignaturePredicate = "https://model_signing/signature/v1.0";
inline constexpr std::string_view kCosignSignPredicate = "https://sigstore.dev/cosign/sign/v1";
// The file name the reference signer writes and perch looks for.
inline constexpr std::string_view kSignatureFileName = "model.sig";

// An ECDSA public key (P-256, P-384 or P-521). Copies share the key.
class PublicKey {
 public:
  // InvalidArgument, naming `source` (a file name, for messages), when `pem`
  // is not a PEM public key on one of the three curves.
  static Result<PublicKey> FromPem(std::string_view pem, std::string source);

  // Where the key came from, for messages ("trust/site.pem").
  const std::string& source() const;
  // The key as PEM SubjectPublicKeyInfo, as OpenSSL writes it.
  const std::string& pem() const;
  // The sha256 (hex) of pem(): the `hint` the reference signer writes.
  std::string Hint() const;

  struct Key;  // defined in keys.cpp

 private:
  friend struct KeyAccess;
  explicit PublicKey(std::shared_ptr<const Key> key) : key_(std::move(key)) {}
  std::shared_ptr<const Key> key_;
};

// An ECDSA private key. Copies share the key.
class PrivateKey {
 public:
  // InvalidArgument, naming `source`, when `pem` is not an unencrypted PEM
  // private key on one of the three curves.
  static Result<PrivateKey> FromPem(std::string_view pem, std::string source);

  const std::string& source() const;
  PublicKey public_key() const;

  struct Key;  // defined in keys.cpp

 private:
  friend struct KeyAccess;
  explicit PrivateKey(std::shared_ptr<const Key> key) : key_(std::move(key)) {}
  std::shared_ptr<const Key> key_;
};

// Reads PEM public keys. NotFound naming a missing file; InvalidArgument
// naming a file that is not an ECDSA public key (a private key given by
// mistake is refused too, so it is never left in a trust folder).
Result<std::vector<PublicKey>> LoadPublicKeys(const std::vector<std::filesystem::path>& paths);

// Every *.pem in `folder`, in name order; none when the folder is missing.
Result<std::vector<PublicKey>> LoadPublicKeysInFolder(const std::filesystem::path& folder);

// Reads a PEM private key; NotFound / InvalidArgument naming the file.
Result<PrivateKey> LoadPrivateKey(const std::filesystem::path& path);

// Where a model's signature is by default: PATH/model.sig for a folder,
// model.sig beside the file for a single-file model.
std::filesystem::path DefaultSignaturePath(const std::filesystem::path& model_path);

struct SignOptions {
  // Where to write the signature; empty: DefaultSignaturePath.
  std::filesystem::path signature_path{};
  // Files or folders left out of the signature: relative to the model
  // folder, or paths inside it. .git, .gitattributes, .github, .gitignore
  // and the signature file are always left out.
  std::vector<std::filesystem::path> ignore_paths{};
};

// Hashes every file under `model_path` and writes the signature, atomically.
// InvalidArgument for a symlink or a special file in the model (named), a
// missing model; Internal for I/O errors.
Status SignModel(const std::filesystem::path& model_path, const PrivateKey& key,
                 const SignOptions& options = {});

struct VerifyOptions {
  // Where the signature is; empty: DefaultSignaturePath.
  std::filesystem::path signature_path{};
  // As in SignOptions; the ignore paths recorded in the signature count too.
  std::vector<std::filesystem::path> ignore_paths{};
};

struct SignedFile {
  std::string name;    // relative to the model folder, '/'-separated
  std::string sha256;  // hex
};

struct VerifiedModel {
  std::string root_digest;  // "sha256:<hex>", the statement's subject
  std::vector<SignedFile> files;
  std::string key_source;  // which trusted key verified it
};

// Verifies the model's files against its signature and the trusted keys.
// On refusal the Status message names the reason:
//  NotFound: no signature file.
//  Unauthenticated: signed by none of `trusted` (or `trusted` is empty), or
//    the signature does not hold.
//  InvalidArgument: a malformed bundle, another media type, payload type or
//    predicate type, a `shards` (or other) serialization, a resource name
//    with `..`, a leading `/` or repeated, a root digest that does not match
//    the resources, a missing file, a changed file, a file the signature
//    does not cover, a symlink the signature does not allow.
Result<VerifiedModel> VerifyModel(const std::filesystem::path& model_path,
                                  const std::vector<PublicKey>& trusted,
                                  const VerifyOptions& options = {});

// A Sigstore bundle v0.3 holding one DSSE envelope over `payload`.
Result<std::string> SignDsse(std::string_view payload_type, std::string_view payload,
                             const PrivateKey& key);

// The payload of a bundle made by SignDsse (or any bundle v0.3 with a DSSE
// envelope) once its one signature holds for one of `trusted` and its
// payload type is `expected_payload_type`. Errors as for VerifyModel.
Result<std::string> VerifyDsse(std::string_view bundle_json, const std::vector<PublicKey>& trusted,
                               std::string_view expected_payload_type);

// Cosign's key-signed bundle over an OCI manifest: an in-toto Statement with
// predicate https://sigstore.dev/cosign/sign/v1 whose subject is
// `manifest_digest` ("sha256:<hex>"), named `subject_name` (a reference).
Result<std::string> SignManifestDigest(std::string_view subject_name,
                                       std::string_view manifest_digest, const PrivateKey& key);

// Verifies a cosign bundle whose subject is `manifest_digest`. Unauthenticated / InvalidArgument as
// for VerifyModel; InvalidArgument "signed for another digest" when the subject differs.
Status VerifyManifestSignature(std::string_view bundle_json, const std::vector<PublicKey>& trusted,
                               std::string_view manifest_digest);

}  // namespace perch::signing
