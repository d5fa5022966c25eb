#include "store/digest.h"

#include <openssl/evp.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace perch {

Result<Digest> Digest::Parse(std::string_view text) {
  constexpr std::string_view kPrefix = "sha256:";
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    return InvalidArgument("digest '" + std::string(text.substr(0, 80)) +
                           "' is not of the form sha256:<64 hex digits>");
  }
  if (text.substr(0, colon + 1) != kPrefix) {
    return InvalidArgument("digest algorithm '" + std::string(text.substr(0, colon)) +
                           "' is not supported: use sha256");
  }
  const std::string_view hex = text.substr(kPrefix.size());
  const bool hex_ok =
      hex.size() == 64 && hex.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  if (!hex_ok) {
    return InvalidArgument("digest '" + std::string(text.substr(0, 80)) +
                           "' must be sha256: followed by 64 lowercase hex digits");
  }
  return Digest(std::string(text));
}

struct Sha256::Context {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Context() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
  EVP_DigestInit_ex(context_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() = default;

void Sha256::Update(std::string_view bytes) {
  EVP_DigestUpdate(context_->ctx, bytes.data(), bytes.size());
}

Digest Sha256::Finish() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> hash{};
  unsigned int length = 0;
  EVP_DigestFinal_ex(context_->ctx, hash.data(), &length);
  constexpr char kHex[] = "0123456789abcdef";
  std::string text = "sha256:";
  for (unsigned int i = 0; i < length; ++i) {
    text.push_back(kHex[hash[i] >> 4]);
    text.push_back(kHex[hash[i] & 0xf]);
  }
  return Digest(std::move(text));
}

Digest Sha256Of(std::string_view bytes) {
  Sha256 hasher;
  hasher.Update(bytes);
  return hasher.Finish();
}

Result<Digest> Sha256OfFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  Sha256 hasher;
  std::string buffer(1 << 20, '\0');
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hasher.Update(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())));
  }
  if (in.bad()) {
    return Internal("cannot read " + path.string() + ": " + std::strerror(errno));
  }
  return hasher.Finish();
}

}  // namespace perch
