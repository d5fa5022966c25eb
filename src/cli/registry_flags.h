// Flags every command that talks to a registry shares (--insecure, --token,
// --timeout, --ca-file), declared once, and the client they configure.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "core/status.h"
#include "store/blob_sources.h"
#include "store/registry_client.h"

namespace perch::cli {

struct RegistryFlags {
  bool insecure = false;
  std::string token;
  std::string ca_file;
  int timeout_seconds = 60;
  uint64_t chunk_size = uint64_t{16} << 20;
  BlobSources blob_sources{};  // set by `perch serve` with peers: asked before the registry
};

void AddRegistryFlags(CLI::App& app, RegistryFlags& flags);

// --ca-file (PERCH_CA_FILE): the PEM CAs an https:// server must be signed
// by, instead of the system's. Every client command takes it (registry,
// hub, agent); declared here once.
void AddCaFileFlag(CLI::App& app, std::string& ca_file);
// --api-token (PERCH_API_TOKEN): what an agent started with --api-token wants
// from its clients (`perch infer`, `perch perf`).
void AddApiTokenFlag(CLI::App& app, std::string& api_token);

// `stop`: see RegistryClientOptions::stop.
Result<std::unique_ptr<RegistryClient>> MakeRegistryClient(const std::string& registry,
                                                           const RegistryFlags& flags,
                                                           std::stop_token stop = {});

}  // namespace perch::cli
