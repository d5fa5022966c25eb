#include "signing/signing.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/base64.h"
#include "core/files.h"
#include "signing/internal.h"

namespace perch::signing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh ECDSA key pair on `curve` ("P-256", "P-384", "P-521").
std::pair<PrivateKey, PublicKey> MakeKey(const char* curve, const std::string& name) {
  EVP_PKEY* pkey = EVP_EC_gen(curve);
  EXPECT_NE(pkey, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  const std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  auto key = PrivateKey::FromPem(pem, name);
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return {*key, key->public_key()};
}

void Write(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

class SigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("signing_test_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    model_ = dir_ / "model";
    Write(model_ / "model.onnx", "weights");
    Write(model_ / "config" / "labels.txt", "cat\ndog\n");
    Write(model_ / ".git" / "HEAD", "ref");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Signs `statement` (already JSON) as the model's signature.
  void WriteSignedStatement(const json& statement,
                            std::string_view payload_type = kInTotoPayloadType) {
    auto bundle = SignDsse(payload_type, statement.dump(), key_.first);
    ASSERT_TRUE(bundle.ok());
    Write(model_ / "model.sig", *bundle);
  }

  json SignedStatement() {
    EXPECT_TRUE(SignModel(model_, key_.first).ok());
    const json bundle = json::parse(*ReadFile(model_ / "model.sig"));
    return json::parse(*Base64Decode(bundle["dsseEnvelope"]["payload"].get<std::string>()));
  }

  Status Verify(const VerifyOptions& options = {}) {
    return VerifyModel(model_, {key_.second}, options).status();
  }

  fs::path dir_;
  fs::path model_;
  std::pair<PrivateKey, PublicKey> key_ = MakeKey("P-256", "site.pem");
};

void ExpectRefused(const Status& status, StatusCode code, std::string_view reason) {
  EXPECT_EQ(status.code(), code) << status.ToString();
  EXPECT_NE(status.message().find(reason), std::string::npos) << status.message();
}

TEST_F(SigningTest, SignsAndVerifiesOnEveryCurve) {
  for (const char* curve : {"P-256", "P-384", "P-521"}) {
    const auto key = MakeKey(curve, curve);
    ASSERT_TRUE(SignModel(model_, key.first).ok());
    const auto verified = VerifyModel(model_, {key.second});
    ASSERT_TRUE(verified.ok()) << curve << ": " << verified.status().ToString();
    ASSERT_EQ(verified->files.size(), 2u);
    EXPECT_EQ(verified->files[0].name, "config/labels.txt");
    EXPECT_EQ(verified->files[1].name, "model.onnx");
    EXPECT_EQ(verified->root_digest.substr(0, 7), "sha256:");
    EXPECT_EQ(verified->key_source, curve);
  }
}

TEST_F(SigningTest, WritesTheStatementTheReferenceSignerWrites) {
  const json statement = SignedStatement();
  EXPECT_EQ(statement["_type"], "https://in-toto.io/Statement/v1");
  EXPECT_EQ(statement["predicateType"], kModelSignaturePredicate);
  EXPECT_EQ(statement["subject"][0]["name"], "model");
  EXPECT_EQ(statement["predicate"]["serialization"]["method"], "files");
  EXPECT_EQ(statement["predicate"]["serialization"]["hash_type"], "sha256");
  EXPECT_EQ(statement["predicate"]["resources"][1]["name"], "model.onnx");
  // sha256("weights")
  EXPECT_EQ(statement["predicate"]["resources"][1]["digest"],
            "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c");
  const json bundle = json::parse(*ReadFile(model_ / "model.sig"));
  EXPECT_EQ(bundle["mediaType"], kBundleMediaType);
  EXPECT_EQ(bundle["dsseEnvelope"]["payloadType"], kInTotoPayloadType);
  EXPECT_EQ(bundle["verificationMaterial"]["publicKey"]["hint"], key_.second.Hint());
}

TEST_F(SigningTest, VerifiesTheReferenceImplementationsFolders) {
  const fs::path interop = fs::path(PERCH_SOURCE_DIR) / "tests/data/oms";
  auto keys = LoadPublicKeys({interop / "signing-key-pub.pem"});
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  for (const char* folder : {"v1.0.1-elliptic-key", "v1.1.0-elliptic-key"}) {
    const auto verified =
        VerifyModel(interop / folder, *keys, {.signature_path = {}, .ignore_paths = {"ignore-me"}});
    ASSERT_TRUE(verified.ok()) << folder << ": " << verified.status().ToString();
    EXPECT_EQ(verified->root_digest,
              "sha256:92745110b1ab4368471cbe31664e10174e954b113a3df333db860317b2c6dec4");
    // Another key: refused.
    ExpectRefused(
        VerifyModel(interop / folder, {key_.second}, {.ignore_paths = {"ignore-me"}}).status(),
        StatusCode::kUnauthenticated, "does not verify with any trusted key");
  }
  // 1.0.1 records no ignore paths: without the flag the extra file is refused.
  ExpectRefused(VerifyModel(interop / "v1.0.1-elliptic-key", *keys).status(),
                StatusCode::kInvalidArgument, "\"ignore-me\" is not covered");
}

TEST_F(SigningTest, RefusesAChangedByte) {
  ASSERT_TRUE(SignModel(model_, key_.first).ok());
  Write(model_ / "model.onnx", "weighta");
  ExpectRefused(Verify(), StatusCode::kInvalidArgument,
                "\"model.onnx\" does not match its signature");
}

TEST_F(SigningTest, RefusesAMissingFile) {
  ASSERT_TRUE(SignModel(model_, key_.first).ok());
  fs::remove(model_ / "config" / "labels.txt");
  ExpectRefused(Verify(), StatusCode::kInvalidArgument,
                "signed file \"config/labels.txt\" is missing");
}

TEST_F(SigningTest, RefusesAnUncoveredFileUnlessIgnored) {
  ASSERT_TRUE(SignModel(model_, key_.first).ok());
  Write(model_ / "extra.bin", "x");
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "\"extra.bin\" is not covered");
  EXPECT_TRUE(Verify({.ignore_paths = {"extra.bin"}}).ok());
  EXPECT_TRUE(Verify({.ignore_paths = {model_ / "extra.bin"}}).ok());
  // The defaults: .git*, .github and the signature.
  fs::remove(model_ / "extra.bin");
  Write(model_ / ".github" / "x.yml", "on: push");
  EXPECT_TRUE(Verify().ok());
}

TEST_F(SigningTest, HonoursIgnorePathsAtSigning) {
  Write(model_ / "cache" / "tmp", "scratch");
  ASSERT_TRUE(SignModel(model_, key_.first, {.ignore_paths = {"cache"}}).ok());
  Write(model_ / "cache" / "tmp", "changed");
  // Recorded in the signature, so the verifier needs no flag.
  EXPECT_TRUE(Verify().ok());
  EXPECT_EQ(SignModel(model_, key_.first, {.ignore_paths = {"../elsewhere"}}).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(SigningTest, RefusesSymlinks) {
  ASSERT_TRUE(SignModel(model_, key_.first).ok());
  fs::create_symlink("model.onnx", model_ / "alias.onnx");
  ExpectRefused(Verify(), StatusCode::kInvalidArgument,
                "\"alias.onnx\" is a symlink and the signature does not allow symlinks");
  ExpectRefused(SignModel(model_, key_.first), StatusCode::kInvalidArgument, "is a symlink");
}

TEST_F(SigningTest, FollowsSymlinksWhenTheSignatureAllowsThem) {
  json statement = SignedStatement();
  fs::create_symlink("model.onnx", model_ / "alias.onnx");
  statement["predicate"]["serialization"]["allow_symlinks"] = true;
  statement["predicate"]["resources"].push_back(
      {{"algorithm", "sha256"},
       {"name", "alias.onnx"},
       {"digest", "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"}});
  std::string raw;
  for (const auto& resource : statement["predicate"]["resources"]) {
    const std::string hex = resource["digest"];
    for (size_t i = 0; i < hex.size(); i += 2) {
      raw.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
  }
  statement["subject"][0]["digest"]["sha256"] = HexOf(Sha256Raw(raw));
  WriteSignedStatement(statement);
  EXPECT_TRUE(Verify().ok()) << Verify().ToString();
}

TEST_F(SigningTest, RefusesResourceNamesThatLeaveTheModel) {
  for (const char* name : {"../outside", "/etc/passwd", "a/../b", "a//b", "./model.onnx", ""}) {
    json statement = SignedStatement();
    statement["predicate"]["resources"][0]["name"] = name;
    WriteSignedStatement(statement);
    const Status status = Verify();
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(status.message().find("resource"), std::string::npos) << status.message();
  }
  json statement = SignedStatement();
  statement["predicate"]["resources"][0]["name"] = "../outside";
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "with '..'");
  statement["predicate"]["resources"][0]["name"] = "/abs";
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "with a leading '/'");
}

TEST_F(SigningTest, RefusesARepeatedResource) {
  json statement = SignedStatement();
  statement["predicate"]["resources"].push_back(statement["predicate"]["resources"][0]);
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "twice");
}

TEST_F(SigningTest, RefusesARootDigestThatDoesNotMatchTheResources) {
  json statement = SignedStatement();
  statement["subject"][0]["digest"]["sha256"] = std::string(64, 'a');
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "root digest does not match");
}

TEST_F(SigningTest, RefusesShardsAndUnknownSerializations) {
  json statement = SignedStatement();
  statement["predicate"]["serialization"]["method"] = "shards";
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "\"shards\" serialization");
  statement["predicate"]["serialization"]["method"] = "digest";
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "serialization method \"digest\"");
  statement["predicate"]["serialization"]["method"] = "files";
  statement["predicate"]["serialization"]["hash_type"] = "blake2";
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "hash_type is not sha256");
}

TEST_F(SigningTest, RefusesAnotherPredicateOrPayloadType) {
  json statement = SignedStatement();
  statement["predicateType"] = kCosignSignPredicate;
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "predicate type");
  statement["predicateType"] = kModelSignaturePredicate;
  WriteSignedStatement(statement, "application/json");
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "payload type is \"application/json\"");
  statement["_type"] = "https://in-toto.io/Statement/v0.1";
  WriteSignedStatement(statement);
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "not an in-toto Statement v1");
}

TEST_F(SigningTest, RefusesAnotherKeyAndNoKey) {
  ASSERT_TRUE(SignModel(model_, key_.first).ok());
  const auto other = MakeKey("P-256", "other.pem");
  ExpectRefused(VerifyModel(model_, {other.second}).status(), StatusCode::kUnauthenticated,
                "other.pem");
  ExpectRefused(VerifyModel(model_, {}).status(), StatusCode::kUnauthenticated, "no trusted key");
  // Any trusted key may be the one: the bundle's hint does not choose.
  EXPECT_TRUE(VerifyModel(model_, {other.second, key_.second}).ok());
}

TEST_F(SigningTest, RefusesAnUnsignedModel) {
  ExpectRefused(Verify(), StatusCode::kNotFound, "not signed");
}

TEST_F(SigningTest, RefusesMalformedBundles) {
  ASSERT_TRUE(SignModel(model_, key_.first).ok());
  const json good = json::parse(*ReadFile(model_ / "model.sig"));
  const auto with = [&](const std::function<void(json&)>& change) {
    json bundle = good;
    change(bundle);
    Write(model_ / "model.sig", bundle.dump());
    return Verify();
  };
  ExpectRefused(
      with([](json& b) { b["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.1+json"; }),
      StatusCode::kInvalidArgument, "media type");
  ExpectRefused(with([](json& b) {
                  b["dsseEnvelope"]["signatures"].push_back({{"sig", "AAAA"}});
                }),
                StatusCode::kInvalidArgument, "exactly one signature");
  ExpectRefused(with([](json& b) { b["dsseEnvelope"]["signatures"][0]["sig"] = "%%%"; }),
                StatusCode::kInvalidArgument, "not base64");
  ExpectRefused(with([](json& b) {
                  b["verificationMaterial"]["certificate"] = {{"rawBytes", "AA"}};
                }),
                StatusCode::kInvalidArgument, "certificate");
  ExpectRefused(with([](json& b) { b.erase("dsseEnvelope"); }), StatusCode::kInvalidArgument,
                "no DSSE envelope");
  ExpectRefused(with([](json& b) { b["dsseEnvelope"]["payload"] = 7; }),
                StatusCode::kInvalidArgument, "payload");
  Write(model_ / "model.sig", "not json");
  ExpectRefused(Verify(), StatusCode::kInvalidArgument, "not a JSON Sigstore bundle");
  // A changed payload byte breaks the signature.
  ExpectRefused(with([](json& b) {
                  std::string payload =
                      *Base64Decode(b["dsseEnvelope"]["payload"].get<std::string>());
                  payload[payload.find("sha256")] = 'S';
                  b["dsseEnvelope"]["payload"] = Base64Encode(payload);
                }),
                StatusCode::kUnauthenticated, "does not verify");
}

TEST_F(SigningTest, SignsASingleFileModelBesideIt) {
  const fs::path file = model_ / "model.onnx";
  ASSERT_TRUE(SignModel(file, key_.first).ok());
  EXPECT_TRUE(fs::exists(model_ / "model.sig"));
  const auto verified = VerifyModel(file, {key_.second});
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  ASSERT_EQ(verified->files.size(), 1u);
  EXPECT_EQ(verified->files[0].name, "model.onnx");
  Write(file, "changed");
  EXPECT_EQ(VerifyModel(file, {key_.second}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SigningTest, SignatureElsewhere) {
  const fs::path signature = dir_ / "elsewhere.sig";
  ASSERT_TRUE(SignModel(model_, key_.first, {.signature_path = signature}).ok());
  EXPECT_FALSE(fs::exists(model_ / "model.sig"));
  EXPECT_TRUE(Verify({.signature_path = signature}).ok());
}

TEST_F(SigningTest, AFolderWithSeveralSignaturesHoldsWhenATrustedOneDoes) {
  const auto other = MakeKey("P-384", "other.pem");
  const fs::path first = model_ / "model.sig";
  const fs::path second = model_ / "model.sig.2";
  ASSERT_TRUE(SignModel(model_, other.first, {.signature_path = first}).ok());
  ASSERT_TRUE(SignModel(model_, key_.first, {.signature_path = second}).ok());
  // Each signature was made while the other was or was not there: the one
  // being checked never covers the other.
  auto verified = VerifyModelSignatures(model_, {first, second}, {key_.second}, {});
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  ExpectRefused(
      VerifyModelSignatures(model_, {first, second}, {MakeKey("P-256", "x.pem").second}, {})
          .status(),
      StatusCode::kUnauthenticated, "no signature holds with a trusted key");
  ExpectRefused(VerifyModelSignatures(model_, {}, {key_.second}, {}).status(),
                StatusCode::kNotFound, "not signed");
  // Garbage next to a good signature is refused, named, not passed over.
  Write(first, "{not a bundle");
  ExpectRefused(VerifyModelSignatures(model_, {first, second}, {key_.second}, {}).status(),
                StatusCode::kInvalidArgument, "model.sig is refused");
}

TEST_F(SigningTest, DsseRoundTripAndRefusals) {
  auto bundle =
      SignDsse("application/vnd.perch.location-state.v1+json", "{\"generation\":3}", key_.first);
  ASSERT_TRUE(bundle.ok());
  const auto payload =
      VerifyDsse(*bundle, {key_.second}, "application/vnd.perch.location-state.v1+json");
  ASSERT_TRUE(payload.ok()) << payload.status().ToString();
  EXPECT_EQ(*payload, "{\"generation\":3}");
  ExpectRefused(VerifyDsse(*bundle, {key_.second}, kInTotoPayloadType).status(),
                StatusCode::kInvalidArgument, "payload type");
  const auto other = MakeKey("P-384", "other.pem");
  ExpectRefused(
      VerifyDsse(*bundle, {other.second}, "application/vnd.perch.location-state.v1+json").status(),
      StatusCode::kUnauthenticated, "does not verify");
}

TEST_F(SigningTest, CosignManifestSignatures) {
  const std::string digest = "sha256:" + std::string(64, 'b');
  auto bundle = SignManifestDigest("hub.local/models/kws", digest, key_.first);
  ASSERT_TRUE(bundle.ok());
  EXPECT_TRUE(VerifyManifestSignature(*bundle, {key_.second}, digest).ok());
  ExpectRefused(VerifyManifestSignature(*bundle, {key_.second}, "sha256:" + std::string(64, 'c')),
                StatusCode::kInvalidArgument, "another digest");
  const json statement = json::parse(*VerifyDsse(*bundle, {key_.second}, kInTotoPayloadType));
  EXPECT_EQ(statement["predicateType"], kCosignSignPredicate);
  // A model signature is not a manifest signature.
  ASSERT_TRUE(SignModel(model_, key_.first).ok());
  ExpectRefused(VerifyManifestSignature(*ReadFile(model_ / "model.sig"), {key_.second}, digest),
                StatusCode::kInvalidArgument, "predicate type");
  EXPECT_EQ(SignManifestDigest("x", "sha256:xyz", key_.first).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(SigningTest, KeyLoadingErrorsNameTheFile) {
  ExpectRefused(LoadPublicKeys({dir_ / "missing.pem"}).status(), StatusCode::kNotFound,
                "missing.pem");
  Write(dir_ / "junk.pem", "hello");
  ExpectRefused(LoadPublicKeys({dir_ / "junk.pem"}).status(), StatusCode::kInvalidArgument,
                "junk.pem is not a PEM public key");
  ExpectRefused(LoadPrivateKey(dir_ / "junk.pem").status(), StatusCode::kInvalidArgument,
                "junk.pem is not a PEM private key");
  // A private key where a public one belongs.
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  BIO* bio = BIO_new_file((dir_ / "private.pem").c_str(), "w");
  PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  BIO_free(bio);
  ExpectRefused(LoadPublicKeys({dir_ / "private.pem"}).status(), StatusCode::kInvalidArgument,
                "is a private key");
  EXPECT_TRUE(LoadPrivateKey(dir_ / "private.pem").ok());
  // An encrypted private key.
  bio = BIO_new_file((dir_ / "encrypted.pem").c_str(), "w");
  PEM_write_bio_PKCS8PrivateKey(bio, pkey, EVP_aes_256_cbc(), "pass", 4, nullptr, nullptr);
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  ExpectRefused(LoadPrivateKey(dir_ / "encrypted.pem").status(), StatusCode::kInvalidArgument,
                "encrypted");
  // Another kind of key (Ed25519) and another curve.
  for (const char* kind : {"ED25519", "secp256k1"}) {
    EVP_PKEY* other = std::string(kind) == "ED25519" ? EVP_PKEY_Q_keygen(nullptr, nullptr, kind)
                                                     : EVP_EC_gen(kind);
    ASSERT_NE(other, nullptr) << kind;
    bio = BIO_new_file((dir_ / "other.pem").c_str(), "w");
    PEM_write_bio_PUBKEY(bio, other);
    BIO_free(bio);
    EVP_PKEY_free(other);
    ExpectRefused(LoadPublicKeys({dir_ / "other.pem"}).status(), StatusCode::kInvalidArgument,
                  "not an ECDSA key on P-256, P-384 or P-521");
  }
}

TEST_F(SigningTest, LoadsEveryPemOfATrustFolder) {
  const auto second = MakeKey("P-384", "b");
  Write(dir_ / "trust" / "a.pem", key_.second.pem());
  Write(dir_ / "trust" / "b.pem", second.second.pem());
  Write(dir_ / "trust" / "README", "not a key");
  auto keys = LoadPublicKeysInFolder(dir_ / "trust");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ(fs::path((*keys)[0].source()).filename(), "a.pem");
  EXPECT_TRUE(LoadPublicKeysInFolder(dir_ / "none")->empty());
}

TEST(PreAuthEncodingTest, MatchesTheDsseSpecification) {
  EXPECT_EQ(PreAuthEncoding("http://example.com/HelloWorld", "hello world"),
            "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
}

}  // namespace
}  // namespace perch::signing
