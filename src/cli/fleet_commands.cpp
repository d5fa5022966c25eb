// The fleet commands, run against a hub's /api/v1 with the admin token:
// `perch locations|devices|deployments`, `perch deploy`, `perch rollback`
// and `perch status`.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/hub_agent.h"
#include "fleet/fleet_json.h"
#include "fleet/hub_client.h"
#include "store/reference.h"

namespace perch::cli {
namespace {

struct HubFlags {
  std::string url = "http://127.0.0.1:8080";
  std::string token;
  std::string ca_file;
  bool json = false;
};

void AddHubFlags(CLI::App& app, HubFlags& flags) {
  app.add_option("--hub", flags.url, "The hub, http(s)://HOST[:PORT]")
      ->envname("PERCH_HUB")
      ->capture_default_str();
  app.add_option("--token", flags.token, "The hub's admin token")->envname("PERCH_TOKEN");
  AddCaFileFlag(app, flags.ca_file);
  app.add_flag("--json", flags.json, "Print JSON instead of a table");
}

int Fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return status.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

Result<std::unique_ptr<HubClient>> Connect(const HubFlags& flags) {
  return HubClient::Create(
      HubClientOptions{.url = flags.url, .token = flags.token, .ca_file = flags.ca_file});
}

// Runs `call` against the hub and prints its answer with `print`.
template <typename T, typename Call, typename Print>
int RunAgainstHub(const HubFlags& flags, Call call, Print print) {
  auto hub = Connect(flags);
  if (!hub.ok()) {
    return Fail(hub.status());
  }
  Result<T> answer = call(**hub);
  if (!answer.ok()) {
    return Fail(answer.status());
  }
  print(*answer);
  return 0;
}

std::string LabelsText(const Labels& labels) {
  std::string text;
  for (const auto& [key, value] : labels) {
    text += (text.empty() ? "" : ",") + key + "=" + value;
  }
  return text.empty() ? "-" : text;
}

// "90", "90s", "5m", "2h" into seconds.
Result<int64_t> ParseDuration(const std::string& text) {
  if (text.empty()) {
    return InvalidArgument("a duration must not be empty");
  }
  int64_t unit = 1;
  std::string number = text;
  switch (text.back()) {
    case 's':
      number.pop_back();
      break;
    case 'm':
      unit = 60;
      number.pop_back();
      break;
    case 'h':
      unit = 3600;
      number.pop_back();
      break;
    default:
      break;
  }
  if (number.empty() || number.size() > 9 ||
      number.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument("'" + text + "' is not a duration such as 90s, 5m or 1h");
  }
  return std::stoll(number) * unit;
}

void PrintTable(const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(headers.size());
  for (size_t i = 0; i < headers.size(); ++i) {
    widths[i] = headers[i].size();
    for (const auto& row : rows) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  const auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += i + 1 == row.size() ? row[i] : fmt::format("{:<{}}  ", row[i], widths[i]);
    }
    std::printf("%s\n", line.c_str());
  };
  print_row(headers);
  for (const auto& row : rows) {
    print_row(row);
  }
}

template <typename T>
std::string ListJson(const std::vector<T>& items) {
  std::vector<std::string> encoded;
  for (const T& item : items) {
    encoded.push_back(ToJson(item));
  }
  return JsonArray(encoded);
}

std::string Ago(int64_t now, int64_t then) {
  if (then == 0) {
    return "never";
  }
  const int64_t seconds = std::max<int64_t>(0, now - then);
  if (seconds < 120) {
    return fmt::format("{}s ago", seconds);
  }
  if (seconds < 7200) {
    return fmt::format("{}m ago", seconds / 60);
  }
  return fmt::format("{}h ago", seconds / 3600);
}

std::string ModelsText(const Device& device) {
  if (!device.heartbeat || device.heartbeat->models.empty()) {
    return "-";
  }
  std::string text;
  for (const ModelReport& model : device.heartbeat->models) {
    std::string digest = model.digest.size() > 19 ? model.digest.substr(7, 12) : model.digest;
    text += (text.empty() ? "" : " ") +
            fmt::format("{}:{}{}({})", model.name.empty() ? model.reference : model.name,
                        model.version, digest.empty() ? "" : "@" + digest, model.state);
  }
  return text;
}

// "plant-a: a1,a2  plant-b: b1 (1 of 2)", or "every matching device".
std::string PlacementText(const Deployment& deployment) {
  const Revision* current = deployment.Current();
  if (current == nullptr || current->replicas == 0) {
    return "every matching device";
  }
  if (deployment.placements.empty()) {
    return "no matching device";
  }
  std::string text;
  for (const Placement& placement : deployment.placements) {
    std::string devices;
    for (const std::string& device : placement.devices) {
      devices += (devices.empty() ? "" : ",") + device;
    }
    text += fmt::format("{}{}: {}", text.empty() ? "" : "  ", placement.location,
                        devices.empty() ? "-" : devices);
    if (static_cast<int64_t>(placement.devices.size()) < placement.replicas) {
      text += fmt::format(" ({} of {})", placement.devices.size(), placement.replicas);
    }
  }
  return text;
}

// The canary analysis' verdicts with the figures that decided them
// (docs/fleet.md "Canary analysis"): the last 20 of each revision.
void PrintVerdicts(const Deployment& deployment) {
  std::vector<std::vector<std::string>> rows;
  for (const Revision& revision : deployment.revisions) {
    const size_t first = revision.verdicts.size() > 20 ? revision.verdicts.size() - 20 : 0;
    for (size_t i = first; i < revision.verdicts.size(); ++i) {
      const CanaryVerdict& verdict = revision.verdicts[i];
      const auto side = [](int64_t version, int64_t requests, int64_t failures, double p99) {
        return fmt::format("v{} {} req {} fail p99 {:.1f}ms", version, requests, failures, p99);
      };
      rows.push_back({std::to_string(revision.number), verdict.outcome,
                      verdict.window_end == 0
                          ? "-"
                          : fmt::format("{}s", verdict.window_end - verdict.window_start),
                      side(verdict.baseline_version, verdict.baseline_requests,
                           verdict.baseline_failures, verdict.baseline_p99_ms),
                      side(verdict.canary_version, verdict.canary_requests, verdict.canary_failures,
                           verdict.canary_p99_ms),
                      verdict.reason});
    }
  }
  if (!rows.empty()) {
    std::printf("canary analysis:\n");
    PrintTable({"REVISION", "VERDICT", "WINDOW", "BEFORE", "CANARY", "WHY"}, rows);
  }
}

void PrintDeployment(const Deployment& deployment) {
  std::printf("deployment %s\n", deployment.name.c_str());
  std::vector<std::vector<std::string>> rows;
  const Revision* current = deployment.Current();
  for (const Revision& revision : deployment.revisions) {
    std::string state = revision.rolled_back ? "rolled back" : "";
    if (current != nullptr && revision.number == current->number) {
      state = revision.rollout.strategy == RolloutStrategy::kCanary && !revision.promoted
                  ? "current (canary)"
                  : "current";
    }
    const Selector& selector = revision.selector;
    std::string target = selector.location.empty() ? "" : "location=" + selector.location;
    if (!selector.labels.empty()) {
      target += (target.empty() ? "" : " ") + LabelsText(selector.labels);
    }
    if (!selector.architecture.empty()) {
      target += (target.empty() ? "" : " ") + ("arch=" + selector.architecture);
    }
    if (!selector.device.empty()) {
      target += (target.empty() ? "" : " ") + ("device=" + selector.device);
    }
    if (!selector.facts.empty()) {
      target += (target.empty() ? "" : " ") + ("facts=" + ToJson(selector.facts));
    }
    std::string rollout =
        revision.rollout.strategy == RolloutStrategy::kCanary
            ? fmt::format("canary {}% then all after {}s healthy", revision.rollout.canary_percent,
                          revision.rollout.canary_healthy_seconds)
            : "all at once";
    if (revision.rollout.analysis) {
      rollout = fmt::format("canary {}% judged on metrics", revision.rollout.canary_percent);
    }
    rows.push_back({std::to_string(revision.number), revision.reference,
                    target.empty() ? "all devices" : target,
                    revision.replicas == 0 ? "all" : std::to_string(revision.replicas), rollout,
                    state});
  }
  PrintTable({"REVISION", "REFERENCE", "TARGET", "REPLICAS", "ROLLOUT", "STATE"}, rows);
  PrintVerdicts(deployment);
  std::printf("placed on: %s\n", PlacementText(deployment).c_str());
  for (const std::string& warning : PlacementWarnings(deployment)) {
    std::printf("warning: %s\n", warning.c_str());
  }
}

CommandRunner AddLocationsCommand(CLI::App& app) {
  auto flags = std::make_shared<HubFlags>();
  auto spec = std::make_shared<LocationSpec>();
  auto labels = std::make_shared<std::vector<std::string>>();
  auto name = std::make_shared<std::string>();
  AddHubFlags(app, *flags);
  app.add_subcommand("list", "List the locations (the default)");
  auto* create = app.add_subcommand("create", "Create a location; prints its enrolment token");
  create->add_option("name", spec->name, "Location name")->required();
  create->add_option("--description", spec->description, "What and where it is");
  create->add_option("--label", *labels, "KEY=VALUE, repeatable");
  auto* describe = app.add_subcommand("describe", "Show one location");
  describe->add_option("name", *name, "Location name")->required();
  auto* rotate = app.add_subcommand("rotate-token", "Replace a location's enrolment token");
  rotate->add_option("name", *name, "Location name")->required();
  app.require_subcommand(0, 1);
  // --hub, --token and --json may follow the subcommand too.
  for (CLI::App* subcommand : app.get_subcommands({})) {
    subcommand->fallthrough();
  }
  return [=]() -> int {
    if (create->parsed()) {
      auto parsed = ParseLabelFlags(*labels);
      if (!parsed.ok()) {
        return Fail(parsed.status());
      }
      spec->labels = *parsed;
      return RunAgainstHub<WithToken<Location>>(
          *flags, [&](HubClient& hub) { return hub.CreateLocation(*spec); },
          [&](const WithToken<Location>& created) {
            if (flags->json) {
              std::printf("%s\n", ToJson(created).c_str());
              return;
            }
            std::printf("location %s created\nenrolment token: %s\n", created.value.name.c_str(),
                        created.token.c_str());
            std::printf("enrol a device: perch serve --hub %s --token %s --state DIR\n",
                        flags->url.c_str(), created.token.c_str());
          });
    }
    if (describe->parsed()) {
      return RunAgainstHub<Location>(
          *flags, [&](HubClient& hub) { return hub.GetLocation(*name); },
          [&](const Location& location) { std::printf("%s\n", ToJson(location).c_str()); });
    }
    if (rotate->parsed()) {
      return RunAgainstHub<std::string>(
          *flags, [&](HubClient& hub) { return hub.RotateEnrolmentToken(*name); },
          [](const std::string& token) {
            std::printf("new enrolment token: %s\n", token.c_str());
          });
    }
    return RunAgainstHub<std::vector<Location>>(
        *flags, [](HubClient& hub) { return hub.Locations(); },
        [&](const std::vector<Location>& locations) {
          if (flags->json) {
            std::printf("%s\n", ListJson(locations).c_str());
            return;
          }
          std::vector<std::vector<std::string>> rows;
          for (const Location& location : locations) {
            rows.push_back({location.name, LabelsText(location.labels),
                            location.description.empty() ? "-" : location.description});
          }
          PrintTable({"LOCATION", "LABELS", "DESCRIPTION"}, rows);
        });
  };
}

CommandRunner AddDevicesCommand(CLI::App& app) {
  auto flags = std::make_shared<HubFlags>();
  auto name = std::make_shared<std::string>();
  AddHubFlags(app, *flags);
  app.add_subcommand("list", "List the devices (the default)");
  auto* describe = app.add_subcommand("describe", "Show one device and its last heartbeat");
  describe->add_option("name", *name, "Device name")->required();
  auto* revoke = app.add_subcommand("revoke", "Revoke a device's token");
  revoke->add_option("name", *name, "Device name")->required();
  app.require_subcommand(0, 1);
  // --hub, --token and --json may follow the subcommand too.
  for (CLI::App* subcommand : app.get_subcommands({})) {
    subcommand->fallthrough();
  }
  return [=]() -> int {
    if (describe->parsed() || revoke->parsed()) {
      const bool revoking = revoke->parsed();
      return RunAgainstHub<Device>(
          *flags,
          [&](HubClient& hub) { return revoking ? hub.RevokeDevice(*name) : hub.GetDevice(*name); },
          [](const Device& device) { std::printf("%s\n", ToJson(device).c_str()); });
    }
    return RunAgainstHub<std::vector<Device>>(
        *flags, [](HubClient& hub) { return hub.Devices(); },
        [&](const std::vector<Device>& devices) {
          if (flags->json) {
            std::printf("%s\n", ListJson(devices).c_str());
            return;
          }
          std::vector<std::vector<std::string>> rows;
          for (const Device& device : devices) {
            rows.push_back({device.name, device.location, LabelsText(device.labels),
                            device.architecture.empty() ? "-" : device.architecture,
                            device.perch_version.empty() ? "-" : device.perch_version,
                            device.revoked ? "revoked" : "enrolled"});
          }
          PrintTable({"DEVICE", "LOCATION", "LABELS", "ARCH", "VERSION", "STATE"}, rows);
        });
  };
}

CommandRunner AddDeploymentsCommand(CLI::App& app) {
  auto flags = std::make_shared<HubFlags>();
  auto name = std::make_shared<std::string>();
  AddHubFlags(app, *flags);
  app.add_subcommand("list", "List the deployments (the default)");
  auto* describe = app.add_subcommand("describe", "Show one deployment with every revision");
  describe->add_option("name", *name, "Deployment name")->required();
  app.require_subcommand(0, 1);
  // --hub, --token and --json may follow the subcommand too.
  for (CLI::App* subcommand : app.get_subcommands({})) {
    subcommand->fallthrough();
  }
  return [=]() -> int {
    if (describe->parsed()) {
      return RunAgainstHub<Deployment>(
          *flags, [&](HubClient& hub) { return hub.GetDeployment(*name); },
          [&](const Deployment& deployment) {
            if (flags->json) {
              std::printf("%s\n", ToJson(deployment).c_str());
            } else {
              PrintDeployment(deployment);
            }
          });
    }
    return RunAgainstHub<std::vector<Deployment>>(
        *flags, [](HubClient& hub) { return hub.Deployments(); },
        [&](const std::vector<Deployment>& deployments) {
          if (flags->json) {
            std::printf("%s\n", ListJson(deployments).c_str());
            return;
          }
          std::vector<std::vector<std::string>> rows;
          for (const Deployment& deployment : deployments) {
            const Revision* current = deployment.Current();
            rows.push_back({deployment.name, current ? std::to_string(current->number) : "-",
                            current ? current->reference : "(all rolled back)",
                            std::to_string(deployment.revisions.size()),
                            PlacementText(deployment)});
          }
          PrintTable({"DEPLOYMENT", "REVISION", "REFERENCE", "REVISIONS", "PLACED ON"}, rows);
        });
  };
}

struct DeployFlags {
  HubFlags hub;
  DeploymentSpec spec;
  std::vector<std::string> labels;
  std::string canary;
  std::string canary_after = "5m";
  bool analysis = false;
  std::string analysis_window = "60s";
  std::string analysis_deadline = "30m";
  CanaryAnalysis analysis_figures{};
  bool create_only = false;
  bool require_signature = false;
};

CommandRunner AddDeployCommand(CLI::App& app) {
  auto flags = std::make_shared<DeployFlags>();
  AddHubFlags(app, flags->hub);
  app.add_option("reference", flags->spec.reference,
                 "The model, HOST[:PORT]/REPOSITORY[:TAG] or ...@sha256:...")
      ->required();
  app.add_option("--name", flags->spec.name,
                 "Deployment name (default: the repository's last part, and -LOCATION)");
  app.add_option("--location", flags->spec.selector.location, "Only devices of this location");
  app.add_option("--label", flags->labels, "Only devices with this KEY=VALUE label, repeatable");
  app.add_option("--architecture", flags->spec.selector.architecture,
                 "Only devices of this architecture (amd64, arm64)");
  app.add_option("--device", flags->spec.selector.device, "Only this device");
  app.add_option("--accelerator", flags->spec.selector.facts.accelerators,
                 "Only devices with this accelerator (nvidia), repeatable");
  app.add_option("--cpu-feature", flags->spec.selector.facts.cpu_features,
                 "Only devices whose CPU has this feature (avx2, asimd, ...), repeatable");
  app.add_option("--min-cores", flags->spec.selector.facts.min_cores,
                 "Only devices with at least this many CPU cores")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--min-memory", flags->spec.selector.facts.min_memory_bytes,
                 "Only devices with at least this much memory, in bytes")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--replicas", flags->spec.replicas,
                 "Serve the model on this many devices of each matching location, chosen by "
                 "the hub (0: every matching device)")
      ->check(CLI::Range(int64_t{0}, kMaxReplicas))
      ->capture_default_str();
  app.add_option("--canary", flags->canary,
                 "Roll out to this share of the devices first, e.g. 20%");
  app.add_option("--canary-after", flags->canary_after,
                 "Then to all once the canaries were healthy this long (90s, 5m, 1h)")
      ->capture_default_str();
  app.add_flag("--analysis", flags->analysis,
               "With --canary: promote or roll back on the devices' measured failure rate and "
               "p99 latency against the previous revision (docs/fleet.md \"Canary analysis\")");
  app.add_option("--analysis-window", flags->analysis_window,
                 "Canary analysis: the length of one judged window")
      ->capture_default_str();
  app.add_option("--analysis-min-requests", flags->analysis_figures.min_requests,
                 "Canary analysis: fewer requests in a window is inconclusive")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000000}))
      ->capture_default_str();
  app.add_option("--analysis-max-failure-increase",
                 flags->analysis_figures.max_failure_rate_increase,
                 "Canary analysis: a window fails when the failure rate rises by more (0.01: one "
                 "percentage point)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--analysis-max-p99-ratio", flags->analysis_figures.max_p99_ratio,
                 "Canary analysis: a window fails when p99 grows past the previous p99 times this")
      ->check(CLI::Range(1.0, 1000.0))
      ->capture_default_str();
  app.add_option("--analysis-failing-windows", flags->analysis_figures.failing_windows,
                 "Canary analysis: this many failing windows in a row roll back")
      ->check(CLI::Range(int64_t{1}, int64_t{100}))
      ->capture_default_str();
  app.add_option("--analysis-passing-windows", flags->analysis_figures.passing_windows,
                 "Canary analysis: this many passing windows in a row promote")
      ->check(CLI::Range(int64_t{1}, int64_t{100}))
      ->capture_default_str();
  app.add_option("--analysis-deadline", flags->analysis_deadline,
                 "Canary analysis: not promoted this long after the deploy, roll back")
      ->capture_default_str();
  app.add_flag("--require-signature", flags->require_signature,
               "Devices refuse the model unless it is signed (model.sig), even without trust "
               "keys of their own; see docs/signing.md");
  app.add_flag("--create-only", flags->create_only,
               "Fail if the deployment exists instead of adding a revision");
  return [flags]() -> int {
    DeploymentSpec spec = flags->spec;
    if (const auto reference = Reference::Parse(spec.reference); !reference.ok()) {
      return Fail(InvalidArgument("reference '" + spec.reference.substr(0, 80) +
                                  "' is not a model reference HOST[:PORT]/REPOSITORY[:TAG]: " +
                                  reference.status().message()));
    }
    auto labels = ParseLabelFlags(flags->labels);
    if (!labels.ok()) {
      return Fail(labels.status());
    }
    spec.selector.labels = *labels;
    if (!flags->canary.empty()) {
      std::string percent = flags->canary;
      if (percent.ends_with('%')) {
        percent.pop_back();
      }
      if (percent.empty() || percent.size() > 2 ||
          percent.find_first_not_of("0123456789") != std::string::npos || std::stoi(percent) < 1) {
        return Fail(InvalidArgument("--canary '" + flags->canary + "' must be 1% to 99%"));
      }
      auto after = ParseDuration(flags->canary_after);
      if (!after.ok()) {
        return Fail(after.status());
      }
      spec.rollout = Rollout{.strategy = RolloutStrategy::kCanary,
                             .canary_percent = std::stoi(percent),
                             .canary_healthy_seconds = *after};
    }
    if (flags->analysis) {
      if (spec.rollout.strategy != RolloutStrategy::kCanary) {
        return Fail(InvalidArgument("--analysis judges a canary: give --canary too"));
      }
      CanaryAnalysis analysis = flags->analysis_figures;
      auto window = ParseDuration(flags->analysis_window);
      if (!window.ok()) {
        return Fail(window.status());
      }
      auto deadline = ParseDuration(flags->analysis_deadline);
      if (!deadline.ok()) {
        return Fail(deadline.status());
      }
      analysis.window_seconds = *window;
      analysis.deadline_seconds = *deadline;
      spec.rollout.analysis = analysis;
    }
    spec.rollout.require_signature = flags->require_signature;
    if (spec.name.empty()) {
      std::string repository =
          spec.reference.substr(0, spec.reference.find_first_of(":@", spec.reference.find('/')));
      spec.name = repository.substr(repository.rfind('/') + 1);
      if (!spec.selector.location.empty()) {
        spec.name += "-" + spec.selector.location;
      }
    }
    return RunAgainstHub<DeployOutcome>(
        flags->hub, [&](HubClient& hub) { return hub.Deploy(spec, flags->create_only); },
        [&](const DeployOutcome& outcome) {
          if (flags->hub.json) {
            std::printf("%s\n", ToJson(outcome).c_str());
            return;
          }
          for (const std::string& warning : outcome.warnings) {
            std::fprintf(stderr, "warning: %s\n", warning.c_str());
          }
          const Revision* current = outcome.deployment.Current();
          std::printf("deployment %s is at revision %lld: %s\n", outcome.deployment.name.c_str(),
                      static_cast<long long>(current ? current->number : 0),
                      current ? current->reference.c_str() : "-");
          if (current != nullptr && current->replicas > 0) {
            std::printf("placed on: %s\n", PlacementText(outcome.deployment).c_str());
          }
        });
  };
}

CommandRunner AddRollbackCommand(CLI::App& app) {
  auto flags = std::make_shared<HubFlags>();
  auto name = std::make_shared<std::string>();
  AddHubFlags(app, *flags);
  app.add_option("deployment", *name, "The deployment to roll back")->required();
  return [=]() -> int {
    return RunAgainstHub<Deployment>(
        *flags, [&](HubClient& hub) { return hub.Rollback(*name); },
        [&](const Deployment& deployment) {
          if (flags->json) {
            std::printf("%s\n", ToJson(deployment).c_str());
            return;
          }
          const Revision* current = deployment.Current();
          std::printf("deployment %s rolled back to revision %lld: %s\n", deployment.name.c_str(),
                      static_cast<long long>(current ? current->number : 0),
                      current ? current->reference.c_str() : "-");
        });
  };
}

CommandRunner AddStatusCommand(CLI::App& app) {
  auto flags = std::make_shared<HubFlags>();
  auto offline_after = std::make_shared<int64_t>(30);
  AddHubFlags(app, *flags);
  app.add_option("--offline-after", *offline_after,
                 "Seconds without a heartbeat after which a device counts as offline")
      ->capture_default_str();
  return [=]() -> int {
    return RunAgainstHub<FleetStatus>(
        *flags, [](HubClient& hub) { return hub.GetStatus(); },
        [&](const FleetStatus& status) {
          if (flags->json) {
            std::printf("%s\n", ToJson(status).c_str());
            return;
          }
          std::vector<std::vector<std::string>> rows;
          for (const Device& device : status.devices) {
            const bool online =
                device.last_seen != 0 && status.now - device.last_seen <= *offline_after;
            const std::string seen =
                device.revoked
                    ? "revoked"
                    : (online ? "online" : "offline, seen " + Ago(status.now, device.last_seen));
            std::string health = "-";
            if (device.heartbeat) {
              health = device.heartbeat->errors.empty() ? "ok" : device.heartbeat->errors.front();
            }
            const int64_t bundle = device.heartbeat ? device.heartbeat->bundle_generation : 0;
            rows.push_back({device.name, device.location, seen, ModelsText(device), health,
                            bundle > 0 ? "g" + std::to_string(bundle) : "-"});
          }
          PrintTable({"DEVICE", "LOCATION", "STATE", "MODELS", "HEALTH", "BUNDLE"}, rows);
        });
  };
}

}  // namespace

void AddFleetCommands(CLI::App& app, std::map<const CLI::App*, CommandRunner>& runners) {
  const auto add = [&](const char* name, const char* help,
                       CommandRunner (*add_command)(CLI::App&)) {
    auto* command = app.add_subcommand(name, help);
    runners[command] = add_command(*command);
  };
  add("locations", "List, create and describe the hub's edge locations", AddLocationsCommand);
  add("devices", "List, describe and revoke the hub's devices", AddDevicesCommand);
  add("deployments", "List and describe the hub's deployments", AddDeploymentsCommand);
  add("deploy", "Deploy a model to the devices a selector picks", AddDeployCommand);
  add("rollback", "Roll a deployment back to its previous revision", AddRollbackCommand);
  add("status", "A table of the devices: location, online, models, health", AddStatusCommand);
}

}  // namespace perch::cli
