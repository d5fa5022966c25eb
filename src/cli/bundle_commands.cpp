// `perch bundle export` / `perch bundle import`: location bundles for sites
// with no cloud management (docs/edge-cloud.md).
#include <fmt/format.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bundle/bundle_export.h"
#include "bundle/bundle_import.h"
#include "cli/bundle_agent.h"
#include "cli/commands.h"
#include "cli/registry_flags.h"
#include "fleet/hub_client.h"
#include "signing/signing.h"
#include "store/blob_store.h"
#include "store/model_puller.h"
#include "store/model_pusher.h"
#include "store/reference.h"

namespace perch::cli {
namespace {

namespace fs = std::filesystem;

int Fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return 1;
}

struct ExportOptions {
  std::vector<std::string> references;
  std::string hub;  // take the references from this hub's deployments for --location
  std::string key;
  std::string out;
  std::string location = "site";
  int64_t generation = 0;  // 0: the current time in seconds
  std::string cache;
  RegistryFlags registry;
};

// The references a hub deploys to every device of `location`: the current
// revision of each deployment whose selector names that location (or no
// location) and no single device. A revision that narrows by labels or
// architecture is included with a warning: a bundle serves the whole site.
Result<std::vector<std::string>> LocationReferences(const ExportOptions& options) {
  PERCH_ASSIGN_OR_RETURN(auto hub, HubClient::Create(HubClientOptions{
                                       .url = options.hub,
                                       .token = options.registry.token,
                                       .ca_file = options.registry.ca_file,
                                   }));
  PERCH_RETURN_IF_ERROR(hub->GetLocation(options.location).status());
  PERCH_ASSIGN_OR_RETURN(const auto deployments, hub->Deployments());
  std::vector<std::string> references;
  for (const Deployment& deployment : deployments) {
    const Revision* current = deployment.Current();
    if (current == nullptr || !current->selector.device.empty() ||
        (!current->selector.location.empty() && current->selector.location != options.location)) {
      continue;
    }
    if (!current->selector.labels.empty() || !current->selector.architecture.empty()) {
      std::fprintf(stderr,
                   "warning: deployment %s selects devices by labels or architecture; the "
                   "bundle carries it to every device of %s\n",
                   deployment.name.c_str(), options.location.c_str());
    }
    references.push_back(current->reference);
  }
  if (references.empty()) {
    return NotFound(fmt::format("the hub deploys nothing to location {}", options.location));
  }
  return references;
}

int RunExport(ExportOptions options) {
  if (!options.hub.empty()) {
    if (!options.references.empty()) {
      return Fail(InvalidArgument(
          "give model references or --hub with --location, not both: the hub's desired state "
          "for the location names the models"));
    }
    auto references = LocationReferences(options);
    if (!references.ok()) {
      return Fail(references.status());
    }
    options.references = std::move(references).value();
  } else if (options.references.empty()) {
    return Fail(InvalidArgument(
        "name the models to carry (HOST/REPO:TAG ...) or take a location's from a hub with "
        "--hub URL --location NAME"));
  }
  auto key = signing::LoadPrivateKey(options.key);
  if (!key.ok()) {
    return Fail(key.status());
  }
  const fs::path cache = options.cache.empty()
                             ? fs::path(options.out).parent_path() / ".perch-bundle-cache"
                             : fs::path(options.cache);
  auto blobs = BlobStore::Open(cache);
  if (!blobs.ok()) {
    return Fail(blobs.status());
  }
  std::map<std::string, std::unique_ptr<RegistryClient>> clients;
  std::vector<bundle::ExportModel> models;
  for (const std::string& text : options.references) {
    auto reference = Reference::Parse(text);
    if (!reference.ok()) {
      return Fail(reference.status());
    }
    auto& client = clients[reference->registry];
    if (!client) {
      auto made = MakeRegistryClient(reference->registry, options.registry);
      if (!made.ok()) {
        return Fail(made.status());
      }
      client = std::move(made).value();
    }
    auto fetched = FetchModel(*client, *reference, **blobs);
    if (!fetched.ok()) {
      return Fail(fetched.status());
    }
    for (const std::string& note : fetched->signature_notes) {
      std::fprintf(stderr, "warning: %s: %s\n", text.c_str(), note.c_str());
    }
    if (fetched->signatures.empty()) {
      std::fprintf(stderr,
                   "warning: %s carries no signature: a site with trust keys will refuse it\n",
                   text.c_str());
    }
    models.push_back(
        bundle::ExportModel{bundle::RefNameOf(reference->repository, reference->Identifier()),
                            std::move(fetched).value()});
  }
  const int64_t generation = options.generation > 0
                                 ? options.generation
                                 : std::chrono::duration_cast<std::chrono::seconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
  auto state =
      bundle::ExportBundle(options.out, **blobs, models, options.location, generation, *key);
  if (!state.ok()) {
    return Fail(state.status());
  }
  std::printf("exported %zu models for location %s, generation %lld, into %s\n",
              state->models.size(), state->location.c_str(),
              static_cast<long long>(state->generation), options.out.c_str());
  for (const auto& model : state->models) {
    std::printf("  %s version %lld  %s  %s\n", model.name.c_str(),
                static_cast<long long>(model.version), model.ref.c_str(),
                model.digest.str().c_str());
  }
  return 0;
}

struct ImportOptions {
  std::string bundle;
  std::string hub;  // a site's own hub to hand the bundle to
  RegistryFlags registry;
  std::string state = "perch-state";
  std::vector<std::string> trust_keys;
  uint64_t max_blob_bytes = uint64_t{64} << 30;
};

// A deployment name for `model` at `location`, in the fleet's grammar.
std::string DeploymentName(const std::string& location, const std::string& model) {
  std::string name;
  for (const char c : location + "-" + model) {
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    name.push_back(std::isalnum(static_cast<unsigned char>(lower)) || lower == '.' ||
                           lower == '_' || lower == '-'
                       ? lower
                       : '-');
  }
  return name.substr(0, 64);
}

// Hands a verified bundle to a site's hub: every model (byte for byte, with
// its signatures) into the hub's registry, then one deployment per model
// pinned by digest to the bundle's location; the hub's agents take it from
// there.
Status HandToHub(const ImportOptions& options, const bundle::SiteState& site,
                 const BlobStore& blobs) {
  PERCH_ASSIGN_OR_RETURN(auto hub, HubClient::Create(HubClientOptions{
                                       .url = options.hub,
                                       .token = options.registry.token,
                                       .ca_file = options.registry.ca_file,
                                   }));
  PERCH_RETURN_IF_ERROR(hub->GetLocation(site.location).status());
  const size_t scheme = options.hub.find("://");
  std::string host = options.hub.substr(scheme == std::string::npos ? 0 : scheme + 3);
  host = host.substr(0, host.find('/'));
  RegistryFlags flags = options.registry;
  flags.insecure = flags.insecure || options.hub.starts_with("http://");
  PERCH_ASSIGN_OR_RETURN(auto client, MakeRegistryClient(host, flags));
  for (const bundle::StateModel& model : site.models) {
    const size_t at = model.ref.find('@');
    const size_t colon = model.ref.rfind(':');
    const std::string repository = model.ref.substr(
        0, at != std::string::npos ? at : (colon == std::string::npos ? model.ref.size() : colon));
    const std::string tag = at != std::string::npos      ? model.digest.str()
                            : colon == std::string::npos ? "latest"
                                                         : model.ref.substr(colon + 1);
    const auto signatures = site.signatures.find(model.name);
    PERCH_RETURN_IF_ERROR(PushStoredModel(*client, repository, tag, blobs, model.digest,
                                          signatures == site.signatures.end()
                                              ? std::vector<Digest>{}
                                              : signatures->second)
                              .status());
    DeploymentSpec spec;
    spec.name = DeploymentName(site.location, model.name);
    spec.reference = fmt::format("{}/{}@{}", host, repository, model.digest.str());
    spec.selector.location = site.location;
    PERCH_RETURN_IF_ERROR(hub->Deploy(spec, /*create_only=*/false).status());
    std::printf("deployed %s version %lld to location %s as %s\n", model.name.c_str(),
                static_cast<long long>(model.version), site.location.c_str(), spec.name.c_str());
  }
  return Status::Ok();
}

int RunImport(const ImportOptions& options) {
  auto trusted = LoadTrustKeys(options.trust_keys, options.state);
  if (!trusted.ok()) {
    return Fail(trusted.status());
  }
  bundle::ImportOptions import{.state = options.state,
                               .trusted = std::move(trusted).value(),
                               .limits = {.max_blob_bytes = options.max_blob_bytes},
                               .before_commit = nullptr};
  if (!options.hub.empty()) {
    import.before_commit = [&options](const bundle::SiteState& site, const BlobStore& blobs) {
      return HandToHub(options, site, blobs);
  };
}
auto site = bundle::ImportBundle(options.bundle, import);
if (!site.ok()) {
  return Fail(Status(site.status().code(), fmt::format("{} not imported (nothing changed): {}",
                                                       options.bundle, site.status().message())));
}
std::printf("imported generation %lld for location %s (%zu models) into %s\n",
            static_cast<long long>(site->generation), site->location.c_str(), site->models.size(),
            options.state.c_str());
return 0;
}  // namespace

}  // namespace perch::cli

void AddBundleCommands(CLI::App& app, std::map<const CLI::App*, CommandRunner>& runners) {
  auto* bundle = app.add_subcommand(
      "bundle", "Carry models and a signed desired state to an air-gapped site as one file");
  bundle->require_subcommand(1);

  auto export_options = std::make_shared<ExportOptions>();
  auto* exporter = bundle->add_subcommand(
      "export", "Write a location bundle of models from a registry, its state signed with --key");
  exporter->add_option("references", export_options->references,
                       "Models to carry, HOST/REPO:TAG or HOST/REPO@sha256:... (with their "
                       "signatures)");
  exporter->add_option("--hub", export_options->hub,
                       "Carry what this hub deploys to --location (its admin --token reads the "
                       "deployments and pulls the models)");
  exporter->add_option("--key", export_options->key, "PEM private key that signs the state")
      ->required();
  exporter->add_option("--out", export_options->out, "The bundle file to write (a tar)")
      ->required();
  exporter->add_option("--location", export_options->location, "The location the state is for")
      ->capture_default_str();
  exporter
      ->add_option("--generation", export_options->generation,
                   "The state's generation (it must grow from bundle to bundle; default: "
                   "the current time in seconds)")
      ->check(CLI::Range(int64_t{1}, INT64_MAX));
  exporter->add_option("--cache", export_options->cache,
                       "Where fetched blobs are kept (default: .perch-bundle-cache beside --out)");
  AddRegistryFlags(*exporter, export_options->registry);

  auto import_options = std::make_shared<ImportOptions>();
  auto* importer = bundle->add_subcommand(
      "import",
      "Check a location bundle and make it what `perch serve --bundles --state DIR` serves");
  importer->add_option("bundle", import_options->bundle, "The bundle file (a tar)")->required();
  importer->add_option("--state", import_options->state, "The agent's state folder")
      ->envname("PERCH_STATE")
      ->capture_default_str();
  importer->add_option("--trust-key", import_options->trust_keys,
                       "PEM public key the state and models must be signed by (repeatable; "
                       "default: STATE/trust/*.pem)");
  importer->add_option("--hub", import_options->hub,
                       "Hand the bundle to this site's own hub (its admin --token): the models "
                       "go into its registry and one deployment per model to the bundle's "
                       "location; --state keeps the generation this site has imported");
  AddRegistryFlags(*importer, import_options->registry);
  importer
      ->add_option("--max-blob-bytes", import_options->max_blob_bytes,
                   "Refuse a blob larger than this")
      ->capture_default_str();
  runners[bundle] = [exporter, export_options, import_options] {
    return exporter->parsed() ? RunExport(*export_options) : RunImport(*import_options);
  };
}

}  // namespace perch::cli
