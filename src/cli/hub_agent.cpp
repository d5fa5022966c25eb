#include "cli/hub_agent.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cctype>
#include <map>

#include "cli/commands.h"
#include "engine/execution_providers.h"
#include "fleet/device_facts.h"
#include "store/model_puller.h"
#include "store/reference.h"

namespace perch::cli {
namespace {

std::string Architecture() {
  utsname name{};
  if (uname(&name) != 0) {
    return "unknown";
  }
  const std::string machine = name.machine;
  if (machine == "x86_64") {
    return "amd64";
  }
  if (machine == "aarch64" || machine == "arm64") {
    return "arm64";
  }
  return machine;
}

// The device's non-loopback IPv4 addresses, for the hub's device list.
std::vector<std::string> Addresses() {
  std::vector<std::string> addresses;
  ifaddrs* interfaces = nullptr;
  if (getifaddrs(&interfaces) != 0) {
    return addresses;
  }
  for (const ifaddrs* entry = interfaces; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) {
      continue;
    }
    const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &address->sin_addr, text, sizeof(text));
    if (std::string(text).rfind("127.", 0) != 0) {
      addresses.emplace_back(text);
    }
  }
  freeifaddrs(interfaces);
  return addresses;
}

}  // namespace

Result<Labels> ParseLabelFlags(const std::vector<std::string>& flags) {
  Labels labels;
  for (const std::string& flag : flags) {
    const size_t equals = flag.find('=');
    if (equals == std::string::npos || equals == 0) {
      return InvalidArgument("--label '" + flag + "' must be KEY=VALUE");
    }
    const std::string key = flag.substr(0, equals);
    const std::string value = flag.substr(equals + 1);
    if (!IsValidLabel(key, value)) {
      return InvalidArgument("--label '" + flag +
                             "': keys are lowercase letters, digits, '.', '_', '-'; values at "
                             "most 256 printable characters");
    }
    labels[key] = value;
  }
  return labels;
}

std::string DefaultDeviceName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string name;
  for (const char c : std::string(host)) {
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    name.push_back(std::isalnum(static_cast<unsigned char>(lower)) || lower == '.' ||
                           lower == '_' || lower == '-'
                       ? lower
                       : '-');
  }
  while (!name.empty() && !std::isalnum(static_cast<unsigned char>(name.back()))) {
    name.pop_back();
  }
  return name.substr(0, 64).empty() ? "device" : name.substr(0, 64);
}

void AddHubAgentFlags(CLI::App& app, HubAgentFlags& flags) {
  app.add_option("--hub", flags.url,
                 "Take the models to serve from this hub, http(s)://HOST[:PORT]; --token is the "
                 "location's enrolment token on the first start")
      ->envname("PERCH_HUB");
  app.add_option("--hub-poll", flags.poll_seconds, "Seconds between desired-state checks")
      ->envname("PERCH_HUB_POLL")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  app.add_option("--heartbeat", flags.heartbeat_seconds, "Seconds between heartbeats to the hub")
      ->envname("PERCH_HEARTBEAT")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  app.add_option("--warmup-runs", flags.warmup_runs,
                 "Runs each model from the hub must pass before it serves")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--label", flags.labels, "A KEY=VALUE label of this device (repeatable)")
      ->envname("PERCH_LABELS")
      ->delimiter(',');
}

Status CheckHubAgentFlags(const HubAgentFlags& flags, const std::string& device) {
  PERCH_RETURN_IF_ERROR(ParseLabelFlags(flags.labels).status());
  const std::string name = device.empty() ? DefaultDeviceName() : device;
  if (!IsValidFleetName(name)) {
    return InvalidArgument("--device '" + name +
                           "' is not a valid device name: 1 to 64 of lowercase letters, digits, "
                           "'.', '_' and '-'");
  }
  // The client checks the URL when it is made; it connects only when used.
  HubClientOptions hub;
  hub.url = flags.url;
  return HubClient::Create(std::move(hub)).status();
}

Result<std::unique_ptr<FleetAgent>> OpenHubAgent(
    const HubAgentFlags& flags, const RegistryFlags& registry, const std::string& device,
    const std::filesystem::path& state, const Logger& logger,
    std::function<void(const LocationPeers&)> on_peers) {
  PERCH_RETURN_IF_ERROR(CheckHubAgentFlags(flags, device));
  PERCH_ASSIGN_OR_RETURN(const Labels labels, ParseLabelFlags(flags.labels));
  const std::string name = device.empty() ? DefaultDeviceName() : device;
  std::shared_ptr<ModelPuller> puller;
  {
    PERCH_ASSIGN_OR_RETURN(auto opened, ModelPuller::Open(state));
    puller = std::move(opened);
  }
  // The agent's thread alone calls these, one at a time.
  auto clients = std::make_shared<std::map<std::string, std::unique_ptr<RegistryClient>>>();
  // The agent's Stop ends a pull in progress too.
  std::stop_source stop;
  ModelFetcher fetch = [puller, clients, registry, logger, pulls = stop.get_token()](
                           const std::string& text,
                           const std::string& token) -> Result<PulledModel> {
    PERCH_ASSIGN_OR_RETURN(const Reference reference, Reference::Parse(text));
    auto& client = (*clients)[reference.registry + "\n" + token];
    if (!client) {
      RegistryFlags with_token = registry;
      with_token.token = token;
      PERCH_ASSIGN_OR_RETURN(client, MakeRegistryClient(reference.registry, with_token, pulls));
    }
    PERCH_ASSIGN_OR_RETURN(const SyncOutcome synced, puller->Sync(*client, reference));
    for (const std::string& note : synced.signature_notes) {
      logger.Warn("{}: {}", text, note);
    }
    if (synced.from_cache) {
      logger.Warn("{}: {}; using the cached {}", text, synced.registry_status.message(),
                  synced.record.digest.str());
    }
    std::vector<PulledModel> steps;
    for (const SyncOutcome& step : synced.steps) {
      steps.push_back(PulledModel{.name = step.record.model,
                                  .version = step.record.version,
                                  .digest = step.record.digest.str(),
                                  .model_folder = puller->models_folder() / step.record.model});
    }
    return PulledModel{.name = synced.record.model,
                       .version = synced.record.version,
                       .digest = synced.record.digest.str(),
                       .model_folder = puller->models_folder() / synced.record.model,
                       .steps = std::move(steps)};
  };
  ModelPruner prune = [puller](const std::map<std::string, int64_t>& keep) {
    return puller->Prune(keep);
  };
  DeviceFacts facts = ReadDeviceFacts("/", Architecture());
  facts.perch_version = Version();
  facts.onnxruntime_version = OnnxRuntimeVersion();
  facts.execution_providers = AvailableExecutionProviders();
  FleetAgentOptions options{
      .hub_url = flags.url,
      .enrolment_token = registry.token,
      .ca_file = registry.ca_file,
      .state = state,
      .device = DeviceSpec{.name = name,
                           .labels = labels,
                           .architecture = Architecture(),
                           .perch_version = Version(),
                           .addresses = Addresses(),
                           .facts = std::move(facts)},
      .poll_interval = std::chrono::milliseconds(static_cast<int64_t>(flags.poll_seconds * 1000)),
      .heartbeat_interval =
          std::chrono::milliseconds(static_cast<int64_t>(flags.heartbeat_seconds * 1000)),
      .warmup_runs = flags.warmup_runs,
      .on_peers = std::move(on_peers),
      .stop = std::move(stop),
  };
  return FleetAgent::Open(std::move(options), std::move(fetch), std::move(prune), logger);
}

}  // namespace perch::cli
