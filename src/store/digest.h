// Content digests as OCI writes them ("sha256:" and 64 lowercase hex digits)
// and a streaming SHA-256 for checking bytes as they arrive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace perch {

// A validated "sha256:<hex>" digest. Only sha256 is accepted: it is what
// every registry writes, and refusing the rest keeps one code path.
class Digest {
 public:
  // InvalidArgument, naming what is wrong, for anything but sha256:<64 hex>.
  static Result<Digest> Parse(std::string_view text);

  const std::string& str() const { return text_; }
  std::string_view hex() const { return std::string_view(text_).substr(7); }

  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  explicit Digest(std::string text) : text_(std::move(text)) {}
  friend class Sha256;
  std::string text_;
};

// Incremental SHA-256. Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  // The digest of everything passed to Update; the hasher is spent after.
  Digest Finish();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

Digest Sha256Of(std::string_view bytes);

// Hashes a whole file. NotFound / Internal on I/O errors.
Result<Digest> Sha256OfFile(const std::filesystem::path& path);

}  // namespace perch
