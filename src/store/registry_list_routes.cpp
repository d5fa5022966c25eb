// Listings: tags (/v2/<name>/tags/list), the catalog (/v2/_catalog) and the
// referrers API (/v2/<name>/referrers/<digest>), with `n` / `last`
// pagination and a Link header to the next page.
#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>

#include "store/media_types.h"
#include "store/registry_http_internal.h"

namespace perch::registry_http {
namespace {

constexpr size_t kDefaultPage = 1000;

struct PageRequest {
  size_t limit = kDefaultPage;
  std::string last;
};

// Reads `n` and `last`; answers 400 and returns nullopt when `n` is not a number.
std::optional<PageRequest> ReadPageRequest(const http::Request& request, http::Response& response) {
  PageRequest page;
  page.last = std::string(request.param("last").value_or("").substr(0, 512));
  if (const auto wanted = request.param("n")) {
    const std::string_view n = *wanted;
    const auto [end, error] = std::from_chars(n.data(), n.data() + n.size(), page.limit);
    if (n.empty() || error != std::errc() || end != n.data() + n.size()) {
      SendError(response, 400, OciError::kPaginationNumberInvalid,
                fmt::format("n='{}' is not a non-negative number", n.substr(0, 32)));
      return std::nullopt;
    }
  }
  return page;
}

void SetNextLink(http::Response& response, const std::string& path, const ListPage& page,
                 size_t limit) {
  if (page.more && !page.names.empty()) {
    response.headers.Set(
        "Link", fmt::format("<{}?n={}&last={}>; rel=\"next\"", path, limit, page.names.back()));
  }
}

void ListTags(const http::Request& request, http::Response& response, Body&,
              const Context& context) {
  const std::string& name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  const auto wanted = ReadPageRequest(request, response);
  if (!wanted) {
    return;
  }
  auto page = context.registry.ListTags(name, wanted->last, wanted->limit);
  if (!page.ok()) {
    SendStatus(response, page.status(), OciError::kNameUnknown, OciError::kNameInvalid);
    return;
  }
  SetNextLink(response, fmt::format("/v2/{}/tags/list", name), *page,
              std::min(wanted->limit, page->names.size()));
  response.SetBody(nlohmann::json{{"name", name}, {"tags", page->names}}.dump(),
                   "application/json");
}

void ListCatalog(const http::Request& request, http::Response& response, Body&,
                 const Context& context) {
  const auto wanted = ReadPageRequest(request, response);
  if (!wanted) {
    return;
  }
  auto page = context.registry.ListRepositories(wanted->last, wanted->limit);
  if (!page.ok()) {
    SendStatus(response, page.status(), OciError::kNameUnknown, OciError::kNameInvalid);
    return;
  }
  SetNextLink(response, "/v2/_catalog", *page, std::min(wanted->limit, page->names.size()));
  response.SetBody(nlohmann::json{{"repositories", page->names}}.dump(), "application/json");
}

void ListReferrers(const http::Request& request, http::Response& response, Body&,
                   const Context& context) {
  const std::string& name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  const auto digest = CheckDigest(response, request.match(2));
  if (!digest) {
    return;
  }
  const std::string artifact_type(request.param("artifactType").value_or(""));
  auto referrers = context.registry.Referrers(name, *digest, artifact_type);
  if (!referrers.ok()) {
    SendStatus(response, referrers.status(), OciError::kNameUnknown, OciError::kNameInvalid);
    return;
  }
  nlohmann::json manifests = nlohmann::json::array();
  for (const ManifestRecord& record : *referrers) {
    nlohmann::json descriptor{
        {"mediaType", record.media_type}, {"digest", record.digest.str()}, {"size", record.size}};
    if (!record.artifact_type.empty()) {
      descriptor["artifactType"] = record.artifact_type;
    }
    if (!record.annotations.empty()) {
      descriptor["annotations"] =
          nlohmann::json::parse(record.annotations, nullptr, /*allow_exceptions=*/false);
    }
    manifests.push_back(std::move(descriptor));
  }
  if (!artifact_type.empty()) {
    response.headers.Set("OCI-Filters-Applied", "artifactType");
  }
  const nlohmann::json index{{"schemaVersion", 2},
                             {"mediaType", media_type::kOciIndex},
                             {"manifests", std::move(manifests)}};
  response.SetBody(index.dump(), std::string(media_type::kOciIndex));
}

}  // namespace

void RegisterListRoutes(http::Server& server, const std::shared_ptr<const Context>& context) {
  Route(server, context, "GET", "/v2/_catalog", AccessKind::kPull, ListCatalog);
  Route(server, context, "GET", "/v2/(.+)/tags/list", AccessKind::kPull, ListTags);
  Route(server, context, "GET", "/v2/(.+)/referrers/(.+)", AccessKind::kPull, ListReferrers);
}

}  // namespace perch::registry_http
