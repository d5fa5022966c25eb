// Names in the OCI Distribution grammar and model references of the form
// HOST[:PORT]/REPOSITORY[:TAG][@sha256:<hex>], checked before they reach a
// URL, a database or the filesystem.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace perch {

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*,
// at most 255 characters. Rules out "..", "%2e", empty components and
// every other path trick by construction.
bool IsValidRepositoryName(std::string_view name);

// [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
bool IsValidTag(std::string_view tag);

// A registry host: name or IPv4 address, or [IPv6], with an optional :port.
bool IsValidRegistryHost(std::string_view host);

struct Reference {
  std::string registry;    // "127.0.0.1:8080"
  std::string repository;  // "wakeword/hey_jarvis"
  std::string tag;         // "1"; "latest" when neither tag nor digest is given
  std::string digest;      // "sha256:..." or empty

  // InvalidArgument naming the part that is wrong. The registry host is
  // required (no implicit docker.io): a reference says where it lives.
  static Result<Reference> Parse(std::string_view text);

  // The tag or, when set, the digest: what a manifest URL ends with.
  const std::string& Identifier() const { return digest.empty() ? tag : digest; }
  // "host/repo:tag", "host/repo@sha256:…" or "host/repo:tag@sha256:…".
  std::string ToString() const;
};

}  // namespace perch
