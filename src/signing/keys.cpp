// ECDSA keys through OpenSSL 3's EVP interface. Every failure path clears
// the thread's OpenSSL error queue, so a stale error never surfaces later in
// an unrelated TLS call on the same thread.
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <array>
#include <memory>
#include <system_error>

#include "core/files.h"
#include "signing/internal.h"
#include "signing/signing.h"

namespace perch::signing {
namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

constexpr std::string_view kKeyHelp =
    "make one with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem` and "
    "`openssl ec -in key.pem -pubout -out key.pub.pem`";

// The hash each curve signs with, as the OMS key method pairs them; null
// for any other key.
const EVP_MD* DigestForKey(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC") != 1) {
    return nullptr;
  }
  std::array<char, 64> group{};
  size_t length = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group.data(), group.size(),
                                     &length) != 1) {
    return nullptr;
  }
  const std::string_view name(group.data(), length);
  if (name == "prime256v1" || name == "P-256" || name == "secp256r1") {
    return EVP_sha256();
  }
  if (name == "secp384r1" || name == "P-384") {
    return EVP_sha384();
  }
  if (name == "secp521r1" || name == "P-521") {
    return EVP_sha512();
  }
  return nullptr;
}

BioPtr MemoryBio(std::string_view bytes) {
  return BioPtr(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

std::string PublicPem(EVP_PKEY* key) {
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_PUBKEY(out.get(), key) != 1) {
    ERR_clear_error();
    return {};
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

// Refuses to prompt for a passphrase: perch runs unattended.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

}  // namespace

struct PublicKey::Key {
  PkeyPtr pkey;
  const EVP_MD* md = nullptr;
  std::string source;
  std::string pem;
};

struct PrivateKey::Key {
  PkeyPtr pkey;
  const EVP_MD* md = nullptr;
  std::string source;
  PublicKey public_key;
};

Result<PublicKey> PublicKey::FromPem(std::string_view pem, std::string source) {
  if (pem.find("PRIVATE KEY") != std::string_view::npos) {
    return InvalidArgument(source + " is a private key; give the public key (openssl ec -in " +
                           source + " -pubout) and keep the private one off this machine");
  }
  const BioPtr in = MemoryBio(pem);
  PkeyPtr pkey(in ? PEM_read_bio_PUBKEY(in.get(), nullptr, NoPassphrase, nullptr) : nullptr);
  if (!pkey) {
    ERR_clear_error();
    return InvalidArgument(source + " is not a PEM public key (\"-----BEGIN PUBLIC KEY-----\"); " +
                           std::string(kKeyHelp));
  }
  const EVP_MD* md = DigestForKey(pkey.get());
  if (md == nullptr) {
    return InvalidArgument(source +
                           " is not an ECDSA key on P-256, P-384 or P-521, the curves OMS "
                           "signatures use; " +
                           std::string(kKeyHelp));
  }
  auto key = std::make_shared<Key>();
  key->pem = PublicPem(pkey.get());
  key->pkey = std::move(pkey);
  key->md = md;
  key->source = std::move(source);
  return PublicKey(std::move(key));
}

const std::string& PublicKey::source() const { return key_->source; }
const std::string& PublicKey::pem() const { return key_->pem; }
std::string PublicKey::Hint() const { return HexOf(Sha256Raw(key_->pem)); }

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem, std::string source) {
  if (pem.find("ENCRYPTED") != std::string_view::npos) {
    return InvalidArgument(source +
                           " is encrypted; perch cannot ask for a passphrase: decrypt a copy "
                           "with `openssl pkey -in " +
                           source + " -out plain.pem`");
  }
  const BioPtr in = MemoryBio(pem);
  PkeyPtr pkey(in ? PEM_read_bio_PrivateKey(in.get(), nullptr, NoPassphrase, nullptr) : nullptr);
  if (!pkey) {
    ERR_clear_error();
    return InvalidArgument(source + " is not a PEM private key; " + std::string(kKeyHelp));
  }
  const EVP_MD* md = DigestForKey(pkey.get());
  if (md == nullptr) {
    return InvalidArgument(source +
                           " is not an ECDSA key on P-256, P-384 or P-521, the curves OMS "
                           "signatures use; " +
                           std::string(kKeyHelp));
  }
  PERCH_ASSIGN_OR_RETURN(PublicKey public_key, PublicKey::FromPem(PublicPem(pkey.get()), source));
  auto key = std::make_shared<Key>(Key{std::move(pkey), md, std::move(source), public_key});
  return PrivateKey(std::move(key));
}

const std::string& PrivateKey::source() const { return key_->source; }
PublicKey PrivateKey::public_key() const { return key_->public_key; }

namespace {

Result<std::string> ReadKeyFile(const std::filesystem::path& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return NotFound("key file " + path.string() + " does not exist or is not a file");
  }
  if (std::filesystem::file_size(path, error) > (1u << 20)) {
    return InvalidArgument(path.string() + " is too large to be a PEM key");
  }
  return ReadFile(path);
}

}  // namespace

Result<std::vector<PublicKey>> LoadPublicKeys(const std::vector<std::filesystem::path>& paths) {
  std::vector<PublicKey> keys;
  for (const auto& path : paths) {
    PERCH_ASSIGN_OR_RETURN(const std::string pem, ReadKeyFile(path));
    PERCH_ASSIGN_OR_RETURN(PublicKey key, PublicKey::FromPem(pem, path.string()));
    keys.push_back(std::move(key));
  }
  return keys;
}

Result<std::vector<PublicKey>> LoadPublicKeysInFolder(const std::filesystem::path& folder) {
  std::error_code error;
  if (!std::filesystem::is_directory(folder, error)) {
    return std::vector<PublicKey>{};
  }
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(folder, error)) {
    if (entry.path().extension() == ".pem") {
      paths.push_back(entry.path());
    }
  }
  if (error) {
    return Internal("cannot list trust keys in " + folder.string() + ": " + error.message());
  }
  std::sort(paths.begin(), paths.end());
  return LoadPublicKeys(paths);
}

Result<PrivateKey> LoadPrivateKey(const std::filesystem::path& path) {
  PERCH_ASSIGN_OR_RETURN(const std::string pem, ReadKeyFile(path));
  return PrivateKey::FromPem(pem, path.string());
}

Result<std::string> SignBytes(const PrivateKey& key, std::string_view message) {
  const auto& k = KeyAccess::Of(key);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t length = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(message.data());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, k.md, nullptr, k.pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &length, data, message.size()) != 1) {
    ERR_clear_error();
    return Internal("cannot sign with " + k.source);
  }
  std::string signature(length, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length, data,
                     message.size()) != 1) {
    ERR_clear_error();
    return Internal("cannot sign with " + k.source);
  }
  signature.resize(length);
  return signature;
}

bool VerifyBytes(const PublicKey& key, std::string_view message, std::string_view signature) {
  const auto& k = KeyAccess::Of(key);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  const bool ok =
      ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, k.md, nullptr, k.pkey.get()) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()) == 1;
  ERR_clear_error();
  return ok;
}

std::string Sha256Raw(std::string_view bytes) {
  std::string digest(32, '\0');
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(digest.data()), &length,
             EVP_sha256(), nullptr);
  return digest;
}

std::string HexOf(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 0xf]);
  }
  return hex;
}

}  // namespace perch::signing
