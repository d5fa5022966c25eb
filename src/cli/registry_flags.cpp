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
}

Result<std::unique_ptr<RegistryClient>> MakeRegistryClient(const std::string& registry,
                                                           const RegistryFlags& flags) {
  return RegistryClient::Create(RegistryClientOptions{
      .registry = registry,
      .insecure = flags.insecure,
      .token = flags.token,
      .connect_timeout = std::chrono::seconds(std::min(flags.timeout_seconds, 30)),
      .read_timeout = std::chrono::seconds(flags.timeout_seconds),
      .chunk_size = flags.chunk_size,
  });
}

}  // namespace perch::cli
