#include "cli/registry_flags.h"

namespace perch::cli {

void AddRegistryFlags(CLI::App& app, RegistryFlags& flags) {
  app.add_flag("--insecure", flags.insecure,
               "Talk plain HTTP to the registry (loopback registries always do)")
      ->envname("PERCH_INSECURE");
  app.add_option("--token", flags.token,
                 "Bearer token for the registry (prefer PERCH_TOKEN: flags show in ps)")
      ->envname("PERCH_TOKEN");
  app.add_option("--timeout", flags.timeout_seconds,
                 "Seconds to wait for the registry to connect or to send the next bytes")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  AddCaFileFlag(app, flags.ca_file);
}

void AddCaFileFlag(CLI::App& app, std::string& ca_file) {
  app.add_option("--ca-file", ca_file,
                 "PEM file of the CAs that https:// servers must be signed by, instead of the "
                 "system's")
      ->envname("PERCH_CA_FILE")
      ->check(CLI::ExistingFile);
}

void AddApiTokenFlag(CLI::App& app, std::string& api_token) {
  app.add_option("--api-token", api_token,
                 "Token the agent's inference API needs (sent as 'Authorization: Bearer')")
      ->envname("PERCH_API_TOKEN");
}

Result<std::unique_ptr<RegistryClient>> MakeRegistryClient(const std::string& registry,
                                                           const RegistryFlags& flags,
                                                           std::stop_token stop) {
  return RegistryClient::Create(RegistryClientOptions{
      .registry = registry,
      .insecure = flags.insecure,
      .token = flags.token,
      .ca_file = flags.ca_file,
      .connect_timeout = std::chrono::seconds(std::min(flags.timeout_seconds, 30)),
      .read_timeout = std::chrono::seconds(flags.timeout_seconds),
      .chunk_size = flags.chunk_size,
      .blob_sources = flags.blob_sources,
      .stop = std::move(stop),
  });
}

}  // namespace perch::cli
