#include "fleet/hub_client.h"

#include <nlohmann/json.hpp>

#include "fleet/fleet_json.h"
#include "http/client.h"
#include "http/errors.h"

namespace perch {
namespace {

// The hub's `{"error": ...}` message, or the start of whatever came back.
std::string ErrorMessage(const http::ClientResponse& response) {
  const auto parsed = nlohmann::json::parse(response.body, nullptr, false);
  if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_string()) {
    return parsed["error"].get<std::string>();
  }
  return "HTTP " + std::to_string(response.status) + ": " + response.body.substr(0, 200);
}

}  // namespace

class HubClient::Impl {
 public:
  Impl(HubClientOptions options, std::unique_ptr<http::Client> http)
      : options_(std::move(options)), http_(std::move(http)) {}

  const HubClientOptions& options() const { return options_; }
  void SetToken(std::string token) { options_.token = std::move(token); }

  // Sends one request; the body of a 2xx answer, or the error. `etag`
  // (with `not_modified`) makes it a conditional GET.
  Result<std::string> Call(const std::string& method, const std::string& path,
                           const std::string& body = "", const std::string& etag = "",
                           bool* not_modified = nullptr) {
    http::ClientRequest request;
    request.method = method;
    request.url = options_.url + path;
    if (!options_.token.empty()) {
      request.headers.Set("Authorization", "Bearer " + options_.token);
    }
    if (!etag.empty()) {
      request.headers.Set("If-None-Match", "\"" + etag + "\"");
    }
    if (method != "GET") {
      request.headers.Set("Content-Type", "application/json");
      request.body = body;
    }
    auto result = http_->Send(request);
    if (!result.ok()) {
      // "hub http://HOST:PORT is unreachable: ...", "hub http://HOST:PORT: TLS: ..."
      const std::string& message = result.status().message();
      return Status(
          result.status().code(),
          "hub " + (message.starts_with(options_.url) ? message : options_.url + ": " + message));
    }
    if (result->status == 304 && not_modified != nullptr) {
      *not_modified = true;
      return std::string();
    }
    if (result->status < 200 || result->status >= 300) {
      return Status(http::StatusCodeForHttp(result->status), ErrorMessage(*result));
    }
    return std::move(result->body);
  }

  template <typename T, typename Parse>
  Result<T> CallAndParse(Parse parse, const std::string& method, const std::string& path,
                         const std::string& body = "") {
    PERCH_ASSIGN_OR_RETURN(const std::string answer, Call(method, path, body));
    auto parsed = parse(answer);
    if (!parsed.ok()) {
      return Internal("hub " + options_.url +
                      " sent an answer perch cannot read: " + parsed.status().message());
    }
    return std::move(parsed).value();
  }

 private:
  HubClientOptions options_;
  const std::unique_ptr<http::Client> http_;
};

namespace {

constexpr const char* kApi = "/api/v1";

bool IsValidHubUrl(const std::string& url) {
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (url.starts_with(scheme)) {
      const std::string rest = url.substr(scheme.size());
      return !rest.empty() && rest.find('/') == std::string::npos &&
             rest.find_first_of(" \t\r\n@") == std::string::npos;
    }
  }
  return false;
}

// Names go into URL paths: refuse anything but a fleet name before it can
// change the request.
Status CheckName(std::string_view kind, const std::string& name) {
  if (!IsValidFleetName(name)) {
    return InvalidArgument("'" + name.substr(0, 80) + "' is not a valid " + std::string(kind) +
                           " name: 1 to 64 of lowercase letters, digits, '.', '_' and '-'");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<HubClient>> HubClient::Create(HubClientOptions options) {
  while (options.url.ends_with('/')) {
    options.url.pop_back();
  }
  if (!IsValidHubUrl(options.url)) {
    return InvalidArgument("hub URL '" + options.url.substr(0, 200) +
                           "' must be http://HOST[:PORT] or https://HOST[:PORT]");
  }
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options.timeout);
  PERCH_ASSIGN_OR_RETURN(auto http, http::Client::Create(http::ClientOptions{
                                        .ca_file = options.ca_file,
                                        .connect_timeout = timeout,
                                        .read_timeout = timeout,
                                        .stop = options.stop,
                                    }));
  return std::unique_ptr<HubClient>(
      new HubClient(std::make_unique<Impl>(std::move(options), std::move(http))));
}

HubClient::HubClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HubClient::~HubClient() = default;

const std::string& HubClient::url() const { return impl_->options().url; }
void HubClient::SetToken(std::string token) { impl_->SetToken(std::move(token)); }

Result<WithToken<Device>> HubClient::Enrol(const DeviceSpec& spec) {
  return impl_->CallAndParse<WithToken<Device>>(ParseEnrolment, "POST",
                                                std::string(kApi) + "/enrol", ToJson(spec));
}

Result<std::optional<DesiredState>> HubClient::GetDesiredState(const std::string& device,
                                                               const std::string& etag) {
  PERCH_RETURN_IF_ERROR(CheckName("device", device));
  bool not_modified = false;
  PERCH_ASSIGN_OR_RETURN(
      const std::string body,
      impl_->Call("GET", std::string(kApi) + "/devices/" + device + "/desired-state", "", etag,
                  &not_modified));
  if (not_modified) {
    return std::optional<DesiredState>();
  }
  auto state = ParseDesiredState(body);
  if (!state.ok()) {
    return Internal("hub " + url() +
                    " sent a desired state perch cannot read: " + state.status().message());
  }
  return std::optional<DesiredState>(std::move(state).value());
}

Result<LocationPeers> HubClient::GetPeers(const std::string& device) {
  PERCH_RETURN_IF_ERROR(CheckName("device", device));
  return impl_->CallAndParse<LocationPeers>(ParseLocationPeers, "GET",
                                            std::string(kApi) + "/devices/" + device + "/peers");
}

Status HubClient::SendHeartbeat(const std::string& device, const Heartbeat& heartbeat) {
  PERCH_RETURN_IF_ERROR(CheckName("device", device));
  return impl_
      ->Call("POST", std::string(kApi) + "/devices/" + device + "/heartbeat", ToJson(heartbeat))
      .status();
}

Result<WithToken<Location>> HubClient::CreateLocation(const LocationSpec& spec) {
  return impl_->CallAndParse<WithToken<Location>>(ParseCreatedLocation, "POST",
                                                  std::string(kApi) + "/locations", ToJson(spec));
}

Result<std::vector<Location>> HubClient::Locations() {
  return impl_->CallAndParse<std::vector<Location>>(ParseLocations, "GET",
                                                    std::string(kApi) + "/locations");
}

Result<Location> HubClient::GetLocation(const std::string& name) {
  PERCH_RETURN_IF_ERROR(CheckName("location", name));
  return impl_->CallAndParse<Location>(ParseLocation, "GET",
                                       std::string(kApi) + "/locations/" + name);
}

Result<std::string> HubClient::RotateEnrolmentToken(const std::string& location) {
  PERCH_RETURN_IF_ERROR(CheckName("location", location));
  return impl_->CallAndParse<std::string>(
      [](std::string_view body) -> Result<std::string> {
        const auto parsed = nlohmann::json::parse(body, nullptr, false);
        if (!parsed.is_object() || !parsed.value("enrolment_token", nlohmann::json()).is_string()) {
          return InvalidArgument("the answer has no enrolment_token");
        }
        return parsed["enrolment_token"].get<std::string>();
      },
      "POST", std::string(kApi) + "/locations/" + location + "/enrolment-token");
}

Result<std::vector<Device>> HubClient::Devices() {
  return impl_->CallAndParse<std::vector<Device>>(ParseDevices, "GET",
                                                  std::string(kApi) + "/devices");
}

Result<Device> HubClient::GetDevice(const std::string& name) {
  PERCH_RETURN_IF_ERROR(CheckName("device", name));
  return impl_->CallAndParse<Device>(ParseDevice, "GET", std::string(kApi) + "/devices/" + name);
}

Result<Device> HubClient::RevokeDevice(const std::string& name) {
  PERCH_RETURN_IF_ERROR(CheckName("device", name));
  return impl_->CallAndParse<Device>(ParseDevice, "POST",
                                     std::string(kApi) + "/devices/" + name + "/revoke");
}

Result<DeployOutcome> HubClient::Deploy(const DeploymentSpec& spec, bool create_only) {
  PERCH_RETURN_IF_ERROR(CheckName("deployment", spec.name));
  if (create_only) {
    return impl_->CallAndParse<DeployOutcome>(ParseDeployOutcome, "POST",
                                              std::string(kApi) + "/deployments", ToJson(spec));
  }
  return impl_->CallAndParse<DeployOutcome>(
      ParseDeployOutcome, "PUT", std::string(kApi) + "/deployments/" + spec.name, ToJson(spec));
}

Result<Deployment> HubClient::Rollback(const std::string& name) {
  PERCH_RETURN_IF_ERROR(CheckName("deployment", name));
  return impl_->CallAndParse<Deployment>(ParseDeployment, "POST",
                                         std::string(kApi) + "/deployments/" + name + "/rollback");
}

Result<std::vector<Deployment>> HubClient::Deployments() {
  return impl_->CallAndParse<std::vector<Deployment>>(ParseDeployments, "GET",
                                                      std::string(kApi) + "/deployments");
}

Result<Deployment> HubClient::GetDeployment(const std::string& name) {
  PERCH_RETURN_IF_ERROR(CheckName("deployment", name));
  return impl_->CallAndParse<Deployment>(ParseDeployment, "GET",
                                         std::string(kApi) + "/deployments/" + name);
}

Result<FleetStatus> HubClient::GetStatus() {
  return impl_->CallAndParse<FleetStatus>(ParseFleetStatus, "GET", std::string(kApi) + "/status");
}

}  // namespace perch
