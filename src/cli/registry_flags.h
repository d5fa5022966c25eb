// Flags every command that talks to a registry shares (--insecure, --token,
// --timeout), declared once, and the client they configure.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "core/status.h"
#include "store/registry_client.h"

namespace perch::cli {

struct RegistryFlags {
  bool insecure = false;
  std::string token;
  int timeout_seconds = 60;
  uint64_t chunk_size = uint64_t{16} << 20;
};

void AddRegistryFlags(CLI::App& app, RegistryFlags& flags);

Result<std::unique_ptr<RegistryClient>> MakeRegistryClient(const std::string& registry,
                                                           const RegistryFlags& flags);

}  // namespace perch::cli
