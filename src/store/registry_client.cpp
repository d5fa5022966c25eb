#include "store/registry_client.h"

#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/http_status.h"
#include "store/media_types.h"
#include "store/reference.h"

namespace perch {
namespace {

using nlohmann::json;

constexpr int kMaxRedirects = 5;
constexpr size_t kMaxErrorBodyBytes = 64 << 10;
constexpr int kMaxPages = 10000;

// What a registry answers when it is asked for a manifest of any kind perch
// can at least describe.
std::string ManifestAccept() {
  return fmt::format("{}, {}, {}, {}", media_type::kOciManifest, media_type::kOciIndex,
                     media_type::kDockerManifest, media_type::kDockerManifestList);
}

std::string DescribeTransportError(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "connection refused (or no route to the host)";
    case httplib::Error::ConnectionTimeout:
      return "timed out connecting";
    case httplib::Error::Read:
      return "the connection broke while reading the answer";
    case httplib::Error::Write:
      return "the connection broke while sending";
    case httplib::Error::SSLConnection:
      return "the TLS handshake failed (a plain-HTTP registry needs --insecure)";
    case httplib::Error::SSLServerVerification:
      return "its TLS certificate is not trusted";
    case httplib::Error::SSLLoadingCerts:
      return "the system's CA certificates could not be loaded";
    default:
      return httplib::to_string(error);
  }
}

// "MANIFEST_UNKNOWN: manifest unknown" out of an OCI error body, or the
// body's start when it is not one.
std::string DescribeErrorBody(const std::string& body) {
  const json value = json::parse(body, nullptr, false);
  if (value.is_object() && value.contains("errors") && value["errors"].is_array()) {
    std::string text;
    for (const auto& error : value["errors"]) {
      if (!error.is_object()) {
        continue;
      }
      if (!text.empty()) {
        text += "; ";
      }
      text += error.value("code", std::string("?"));
      const std::string message = error.value("message", std::string());
      if (!message.empty()) {
        text += ": " + message;
      }
    }
    if (!text.empty()) {
      return text;
    }
  }
  std::string start = body.substr(0, 200);
  std::replace_if(
      start.begin(), start.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return start;
}

struct Url {
  std::string origin;  // "http://host:port"
  std::string path;    // "/v2/...?..."
};

// Splits an absolute URL, or resolves a path against `origin`.
Url ResolveUrl(const std::string& origin, const std::string& location) {
  const size_t scheme = location.find("://");
  if (scheme == std::string::npos) {
    return {origin, location.empty() || location.front() != '/' ? "/" + location : location};
  }
  const size_t path = location.find('/', scheme + 3);
  if (path == std::string::npos) {
    return {location, "/"};
  }
  return {location.substr(0, path), location.substr(path)};
}

std::string AppendQuery(const std::string& path, const std::string& query) {
  return path + (path.find('?') == std::string::npos ? "?" : "&") + query;
}

// `key="value"` pairs of a WWW-Authenticate challenge after its scheme.
std::map<std::string, std::string> ParseChallenge(const std::string& header) {
  std::map<std::string, std::string> params;
  size_t at = header.find(' ');
  while (at != std::string::npos && at < header.size()) {
    while (at < header.size() && (header[at] == ' ' || header[at] == ',')) {
      ++at;
    }
    const size_t equals = header.find('=', at);
    if (equals == std::string::npos) {
      break;
    }
    std::string key = header.substr(at, equals - at);
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value;
    at = equals + 1;
    if (at < header.size() && header[at] == '"') {
      const size_t close = header.find('"', at + 1);
      value =
          header.substr(at + 1, close == std::string::npos ? std::string::npos : close - at - 1);
      at = close == std::string::npos ? header.size() : close + 1;
    } else {
      const size_t comma = header.find(',', at);
      value = header.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
      at = comma;
    }
    params[key] = value;
  }
  return params;
}

std::string UrlEncode(const std::string& text) {
  std::string encoded;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      encoded += static_cast<char>(c);
    } else {
      encoded += fmt::format("%{:02X}", c);
    }
  }
  return encoded;
}

// The target of a `Link: <...>; rel="next"` header, or "".
std::string NextLink(const std::string& header) {
  if (header.find("rel=\"next\"") == std::string::npos &&
      header.find("rel=next") == std::string::npos) {
    return "";
  }
  const size_t open = header.find('<');
  const size_t close = header.find('>', open);
  if (open == std::string::npos || close == std::string::npos) {
    return "";
  }
  return header.substr(open + 1, close - open - 1);
}

Result<std::string> ReadFileRange(const std::filesystem::path& path, uint64_t offset,
                                  uint64_t length) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound(fmt::format("cannot open {}", path.string()));
  }
  in.seekg(static_cast<std::streamoff>(offset));
  std::string bytes(length, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(length))) {
    return Internal(fmt::format("cannot read {} bytes at {} of {}", length, offset, path.string()));
  }
  return bytes;
}

}  // namespace

bool IsLoopbackRegistry(const std::string& registry) {
  std::string host = registry;
  if (!host.empty() && host.front() == '[') {
    return host.starts_with("[::1]");
  }
  host = host.substr(0, host.find(':'));
  return host == "localhost" || host.starts_with("127.");
}

std::string BlobWriterName(const Digest& digest) {
  return "pull-sha256-" + std::string(digest.hex());
}

class RegistryClient::Impl {
 public:
  explicit Impl(RegistryClientOptions options)
      : options_(std::move(options)),
        origin_(
            (options_.insecure || IsLoopbackRegistry(options_.registry) ? "http://" : "https://") +
            options_.registry) {
    if (!options_.token.empty()) {
      authorization_ = "Bearer " + options_.token;
    }
  }

  const RegistryClientOptions& options() const { return options_; }

  // A client for `origin`: the registry's own (kept alive between calls) or
  // a fresh one for a redirect or token realm elsewhere.
  httplib::Client& ClientFor(const std::string& origin) {
    auto& slot = clients_[origin];
    if (!slot) {
      slot = std::make_unique<httplib::Client>(origin);
      slot->set_connection_timeout(static_cast<time_t>(options_.connect_timeout.count()), 0);
      slot->set_read_timeout(static_cast<time_t>(options_.read_timeout.count()), 0);
      slot->set_write_timeout(static_cast<time_t>(options_.read_timeout.count()), 0);
      slot->set_keep_alive(true);
      slot->set_follow_location(false);
    }
    return *slot;
  }

  using Attempt = std::function<httplib::Result(httplib::Client&, const httplib::Headers&)>;

  // Runs `attempt` against the registry with the current credentials; on a
  // Bearer challenge, fetches a token from its realm and tries once more.
  // With `keep_transport_errors`, a failed transfer comes back as the
  // failed httplib::Result, for callers that say more than "unreachable".
  Result<httplib::Result> Call(const std::string& what, httplib::Headers headers,
                               const Attempt& attempt, bool keep_transport_errors = false) {
    for (int round = 0; round < 2; ++round) {
      httplib::Headers sent = headers;
      if (!authorization_.empty()) {
        sent.emplace("Authorization", authorization_);
      }
      httplib::Result result = attempt(ClientFor(origin_), sent);
      if (!result) {
        if (keep_transport_errors && result.error() != httplib::Error::Connection &&
            result.error() != httplib::Error::ConnectionTimeout) {
          return result;
        }
        return Unreachable(what, result.error());
      }
      if (result->status != 401 || round == 1) {
        return result;
      }
      const std::string challenge = result->get_header_value("WWW-Authenticate");
      if (challenge.size() < 7 ||
          !std::equal(challenge.begin(), challenge.begin() + 7, "Bearer ",
                      [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        return result;
      }
      PERCH_RETURN_IF_ERROR(FetchToken(challenge));
    }
    return Internal("unreachable");
  }

  Status Unreachable(const std::string& what, httplib::Error error) const {
    return Unavailable(fmt::format("registry {} is unreachable: {} ({})", options_.registry,
                                   DescribeTransportError(error), what));
  }

  Status HttpError(const std::string& what, const httplib::Response& response) const {
    std::string detail = DescribeErrorBody(response.body);
    if (response.status == 401) {
      detail += "; pass a token with --token or PERCH_TOKEN";
    }
    return Status(StatusCodeForHttp(response.status),
                  fmt::format("registry {}: {} answered HTTP {}{}{}", options_.registry, what,
                              response.status, detail.empty() ? "" : ": ", detail));
  }

  // The anonymous token flow: GET realm?service=...&scope=...
  Status FetchToken(const std::string& challenge) {
    auto params = ParseChallenge(challenge);
    const std::string realm = params["realm"];
    if (realm.find("://") == std::string::npos) {
      return Status(StatusCode::kUnauthenticated,
                    fmt::format("registry {} asks for a token but names no realm to get it from",
                                options_.registry));
    }
    const Url url = ResolveUrl(origin_, realm);
    std::string path = url.path;
    for (const char* key : {"service", "scope"}) {
      if (!params[key].empty()) {
        path = AppendQuery(path, fmt::format("{}={}", key, UrlEncode(params[key])));
      }
    }
    httplib::Result result = ClientFor(url.origin).Get(path);
    if (!result) {
      return Unavailable(fmt::format("token service {} is unreachable: {}", url.origin,
                                     DescribeTransportError(result.error())));
    }
    if (result->status != 200) {
      return Status(StatusCode::kUnauthenticated,
                    fmt::format("token service {} answered HTTP {}: {}", url.origin, result->status,
                                DescribeErrorBody(result->body)));
    }
    const json body = json::parse(result->body, nullptr, false);
    std::string token;
    if (body.is_object()) {
      token = body.value("token", body.value("access_token", std::string()));
    }
    if (token.empty()) {
      return Status(StatusCode::kUnauthenticated,
                    fmt::format("token service {} answered without a token", url.origin));
    }
    authorization_ = "Bearer " + token;
    return Status::Ok();
  }

  const std::string& origin() const { return origin_; }

  // Follows `Link: <next>` page by page, collecting the strings under `key`.
  Result<std::vector<std::string>> ListPages(std::string path, const char* key,
                                             const std::string& what);

 private:
  const RegistryClientOptions options_;
  const std::string origin_;
  std::string authorization_;
  std::map<std::string, std::unique_ptr<httplib::Client>> clients_;
};

RegistryClient::RegistryClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RegistryClient::~RegistryClient() = default;

Result<std::unique_ptr<RegistryClient>> RegistryClient::Create(RegistryClientOptions options) {
  if (!IsValidRegistryHost(options.registry)) {
    return InvalidArgument(
        fmt::format("\"{}\" is not a registry host (HOST[:PORT])", options.registry));
  }
  if (options.chunk_size < 1024) {
    return InvalidArgument("the upload chunk size must be at least 1024 bytes");
  }
  return std::unique_ptr<RegistryClient>(
      new RegistryClient(std::make_unique<Impl>(std::move(options))));
}

const std::string& RegistryClient::registry() const { return impl_->options().registry; }

Status RegistryClient::Ping() {
  PERCH_ASSIGN_OR_RETURN(auto result,
                         impl_->Call("GET /v2/", {}, [](auto& client, const auto& headers) {
                           return client.Get("/v2/", headers);
                         }));
  if (result->status != 200) {
    return impl_->HttpError("GET /v2/", *result);
  }
  return Status::Ok();
}

Result<FetchedManifest> RegistryClient::GetManifest(const std::string& repository,
                                                    const std::string& reference) {
  const std::string path = fmt::format("/v2/{}/manifests/{}", repository, reference);
  std::string body;
  bool too_big = false;
  int status = 0;
  PERCH_ASSIGN_OR_RETURN(auto result,
                         impl_->Call("GET " + path, {{"Accept", ManifestAccept()}},
                                     [&](httplib::Client& client, const httplib::Headers& headers) {
                                       body.clear();
                                       return client.Get(
                                           path, headers,
                                           [&](const httplib::Response& response) {
                                             status = response.status;
                                             return true;
                                           },
                                           [&](const char* data, size_t length) {
                                             if (body.size() + length > kMaxManifestBytes) {
                                               too_big = status == 200;
                                               return !too_big;
                                             }
                                             body.append(data, length);
                                             return true;
                                           });
                                     }));
  if (too_big) {
    return InvalidArgument(fmt::format("manifest {}/{}:{} is larger than {} bytes", registry(),
                                       repository, reference, kMaxManifestBytes));
  }
  result->body = body;
  if (result->status == 404) {
    return NotFound(fmt::format("{}/{}:{} not found ({})", registry(), repository, reference,
                                DescribeErrorBody(body)));
  }
  if (result->status != 200) {
    return impl_->HttpError("GET " + path, *result);
  }
  FetchedManifest manifest{body, result->get_header_value("Content-Type"), Sha256Of(body)};
  if (reference.starts_with("sha256:")) {
    if (manifest.digest.str() != reference) {
      return InvalidArgument(
          fmt::format("manifest {}/{}@{}: the registry sent content whose "
                      "digest is {}",
                      registry(), repository, reference, manifest.digest.str()));
    }
  } else if (const std::string named = result->get_header_value("Docker-Content-Digest");
             !named.empty() && named != manifest.digest.str()) {
    return InvalidArgument(fmt::format(
        "manifest {}/{}:{}: the registry says its digest is {} but the content hashes to {}",
        registry(), repository, reference, named, manifest.digest.str()));
  }
  return manifest;
}

Result<Descriptor> RegistryClient::HeadManifest(const std::string& repository,
                                                const std::string& reference) {
  const std::string path = fmt::format("/v2/{}/manifests/{}", repository, reference);
  PERCH_ASSIGN_OR_RETURN(auto result, impl_->Call("HEAD " + path, {{"Accept", ManifestAccept()}},
                                                  [&](auto& client, const auto& headers) {
                                                    return client.Head(path, headers);
                                                  }));
  if (result->status == 404) {
    return NotFound(fmt::format("{}/{}:{} not found", registry(), repository, reference));
  }
  if (result->status != 200) {
    return impl_->HttpError("HEAD " + path, *result);
  }
  auto digest = Digest::Parse(result->get_header_value("Docker-Content-Digest"));
  if (!digest.ok()) {
    // Without the header, the body is the only way to know the digest.
    PERCH_ASSIGN_OR_RETURN(const FetchedManifest manifest, GetManifest(repository, reference));
    return Descriptor{manifest.media_type, manifest.digest, manifest.bytes.size(), {}};
  }
  const std::string length = result->get_header_value("Content-Length");
  return Descriptor{result->get_header_value("Content-Type"),
                    *digest,
                    length.empty() ? 0 : std::stoull(length),
                    {}};
}

Result<Digest> RegistryClient::PutManifest(const std::string& repository,
                                           const std::string& reference, const std::string& bytes,
                                           const std::string& media_type) {
  const std::string path = fmt::format("/v2/{}/manifests/{}", repository, reference);
  PERCH_ASSIGN_OR_RETURN(auto result,
                         impl_->Call("PUT " + path, {}, [&](auto& client, const auto& headers) {
                           return client.Put(path, headers, bytes, media_type.c_str());
                         }));
  if (result->status != 201 && result->status != 200) {
    return impl_->HttpError("PUT " + path, *result);
  }
  const Digest digest = Sha256Of(bytes);
  if (const std::string named = result->get_header_value("Docker-Content-Digest");
      !named.empty() && named != digest.str()) {
    return InvalidArgument(fmt::format("registry {} stored the manifest as {}, expected {}",
                                       registry(), named, digest.str()));
  }
  return digest;
}

Status RegistryClient::DeleteManifest(const std::string& repository, const Digest& digest) {
  const std::string path = fmt::format("/v2/{}/manifests/{}", repository, digest.str());
  PERCH_ASSIGN_OR_RETURN(auto result,
                         impl_->Call("DELETE " + path, {}, [&](auto& client, const auto& headers) {
                           return client.Delete(path, headers);
                         }));
  if (result->status == 405) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("registry {} does not allow deleting manifests (Distribution: "
                              "set storage.delete.enabled)",
                              registry()));
  }
  if (result->status == 404) {
    return NotFound(fmt::format("{}/{}@{} not found", registry(), repository, digest.str()));
  }
  if (result->status != 202 && result->status != 200) {
    return impl_->HttpError("DELETE " + path, *result);
  }
  return Status::Ok();
}

Result<std::optional<uint64_t>> RegistryClient::BlobSize(const std::string& repository,
                                                         const Digest& digest) {
  const std::string path = fmt::format("/v2/{}/blobs/{}", repository, digest.str());
  PERCH_ASSIGN_OR_RETURN(auto result,
                         impl_->Call("HEAD " + path, {}, [&](auto& client, const auto& headers) {
                           return client.Head(path, headers);
                         }));
  if (result->status == 404) {
    return std::optional<uint64_t>();
  }
  if (result->status != 200) {
    return impl_->HttpError("HEAD " + path, *result);
  }
  const std::string length = result->get_header_value("Content-Length");
  return std::optional<uint64_t>(length.empty() ? 0 : std::stoull(length));
}

Status RegistryClient::FetchBlob(const std::string& repository, const Descriptor& blob,
                                 BlobStore& store, const TransferProgress& progress) {
  if (store.Has(blob.digest)) {
    if (progress) {
      progress(blob.size, blob.size);
    }
    return Status::Ok();
  }
  const std::string name = BlobWriterName(blob.digest);
  const std::string what = fmt::format("blob {}", blob.digest.str());
  // A partial larger than the blob cannot be a prefix of it.
  const bool resume = store.WrittenSize(name) > 0 && store.WrittenSize(name) <= blob.size;
  PERCH_ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, store.OpenWriter(name, resume));

  Url url{impl_->origin(), fmt::format("/v2/{}/blobs/{}", repository, blob.digest.str())};
  bool overflow = false;
  std::string failure;  // set by the handlers when they stop the transfer
  Status write_status;
  for (int redirects = 0; writer->size() < blob.size; ++redirects) {
    if (redirects > kMaxRedirects) {
      writer->Keep();
      return Unavailable(fmt::format("{}: more than {} redirects", what, kMaxRedirects));
    }
    const uint64_t offset = writer->size();
    int status = 0;
    std::string location;
    std::string error_body;
    const auto on_response = [&](const httplib::Response& response) {
      status = response.status;
      if (status >= 300 && status < 400) {
        location = response.get_header_value("Location");
        return true;
      }
      if (status == 200 && writer->size() > 0) {
        // The server ignored the Range request: start over.
        auto fresh = store.OpenWriter(name, /*resume=*/false);
        if (!fresh.ok()) {
          write_status = fresh.status();
          return false;
        }
        writer = std::move(fresh).value();
      }
      if (status == 206) {
        const std::string range = response.get_header_value("Content-Range");
        if (!range.starts_with(fmt::format("bytes {}-", offset))) {
          failure = fmt::format(
              "the registry answered the Range request for bytes {}- with "
              "Content-Range \"{}\"",
              offset, range);
          return false;
        }
      }
      if (status == 200 || status == 206) {
        const std::string length = response.get_header_value("Content-Length");
        if (!length.empty()) {
          const uint64_t total = writer->size() + std::strtoull(length.c_str(), nullptr, 10);
          if (total > blob.size) {
            failure = fmt::format("{}: registry sent {} bytes, descriptor says {}", what, total,
                                  blob.size);
            overflow = true;
            return false;
          }
        }
      }
      return true;
    };
    const auto on_data = [&](const char* data, size_t length) {
      if (status != 200 && status != 206) {
        if (error_body.size() < kMaxErrorBodyBytes) {
          error_body.append(data, std::min(length, kMaxErrorBodyBytes - error_body.size()));
        }
        return true;
      }
      if (writer->size() + length > blob.size) {
        // Keep the bytes up to the descriptor's size + 1 out: stop here.
        failure = fmt::format("{}: registry sent at least {} bytes, descriptor says {}", what,
                              writer->size() + length, blob.size);
        overflow = true;
        return false;
      }
      write_status = writer->Append(std::string_view(data, length));
      if (!write_status.ok()) {
        return false;
      }
      if (progress) {
        progress(writer->size(), blob.size);
      }
      return true;
    };
    httplib::Headers range;
    if (offset > 0) {
      range.emplace("Range", fmt::format("bytes={}-", offset));
    }
    httplib::Result result(nullptr, httplib::Error::Unknown);
    if (url.origin == impl_->origin()) {
      auto called = impl_->Call(
          "GET " + url.path, range,
          [&](auto& client, const auto& headers) {
            return client.Get(url.path, headers, on_response, on_data);
          },
          /*keep_transport_errors=*/true);
      if (!called.ok()) {
        writer->Keep();  // what an earlier attempt got stays for the next
        return called.status();
      }
      result = std::move(called).value();
    } else {
      // A redirect to storage elsewhere (S3, a CDN): the registry's
      // credentials stay with the registry.
      result = impl_->ClientFor(url.origin).Get(url.path, range, on_response, on_data);
    }
    if (overflow) {
      return InvalidArgument(failure + "; the transfer was stopped and nothing was kept");
    }
    if (!write_status.ok()) {
      return write_status;
    }
    if (!failure.empty()) {
      return InvalidArgument(fmt::format("{}: {}", what, failure));
    }
    if (!result) {
      writer->Keep();
      return Unavailable(fmt::format(
          "{}: download from {} interrupted: {} (got {} of {} bytes; run again to resume)", what,
          url.origin, DescribeTransportError(result.error()), writer->size(), blob.size));
    }
    if (status >= 300 && status < 400 && !location.empty()) {
      url = ResolveUrl(url.origin, location);
      continue;
    }
    if (status == 416) {
      // What we hold does not fit the blob the registry has; start over next time.
      return Unavailable(fmt::format(
          "{}: the registry refused to resume at byte {}; run again to start over", what, offset));
    }
    if (status != 200 && status != 206) {
      writer->Keep();
      result->body = error_body;
      if (status == 404) {
        return NotFound(fmt::format("{} not found in {}/{} ({})", what, registry(), repository,
                                    DescribeErrorBody(error_body)));
      }
      return impl_->HttpError("GET " + url.path, *result);
    }
    if (writer->size() < blob.size) {
      writer->Keep();
      return Unavailable(
          fmt::format("{}: registry sent {} bytes, descriptor says {} (truncated; "
                      "kept for a resumed download)",
                      what, writer->size(), blob.size));
    }
  }
  auto committed = writer->Commit(blob.digest, blob.size);
  if (!committed.ok()) {
    return InvalidArgument(fmt::format("{} from {}/{}: {}; the bytes were discarded", what,
                                       registry(), repository, committed.status().message()));
  }
  return Status::Ok();
}

Result<std::string> RegistryClient::FetchSmallBlob(const std::string& repository,
                                                   const Descriptor& blob) {
  if (blob.size > kMaxManifestBytes) {
    return InvalidArgument(fmt::format("blob {} is {} bytes, more than the {} allowed here",
                                       blob.digest.str(), blob.size, kMaxManifestBytes));
  }
  Url url{impl_->origin(), fmt::format("/v2/{}/blobs/{}", repository, blob.digest.str())};
  for (int redirects = 0; redirects <= kMaxRedirects; ++redirects) {
    std::string body;
    int status = 0;
    bool overflow = false;
    const auto on_response = [&](const httplib::Response& response) {
      status = response.status;
      return true;
    };
    const auto on_data = [&](const char* data, size_t length) {
      if ((status == 200) && body.size() + length > blob.size) {
        overflow = true;
        return false;
      }
      body.append(data, std::min(length, kMaxErrorBodyBytes));
      return true;
    };
    httplib::Result result(nullptr, httplib::Error::Unknown);
    Status called_status;
    if (url.origin == impl_->origin()) {
      auto called = impl_->Call("GET " + url.path, {}, [&](auto& client, const auto& headers) {
        body.clear();
        return client.Get(url.path, headers, on_response, on_data);
      });
      if (called.ok()) {
        result = std::move(called).value();
      } else {
        called_status = called.status();
      }
    } else {
      result = impl_->ClientFor(url.origin).Get(url.path, on_response, on_data);
      if (!result) {
        called_status = impl_->Unreachable("GET " + url.path, result.error());
      }
    }
    if (overflow) {
      return InvalidArgument(
          fmt::format("blob {}: registry sent more than the {} bytes the "
                      "descriptor says",
                      blob.digest.str(), blob.size));
    }
    if (!called_status.ok()) {
      return called_status;
    }
    if (status >= 300 && status < 400 && result->has_header("Location")) {
      url = ResolveUrl(url.origin, result->get_header_value("Location"));
      continue;
    }
    result->body = body;
    if (status != 200) {
      return impl_->HttpError("GET " + url.path, *result);
    }
    if (body.size() != blob.size) {
      return InvalidArgument(fmt::format("blob {}: registry sent {} bytes, descriptor says {}",
                                         blob.digest.str(), body.size(), blob.size));
    }
    if (Sha256Of(body) != blob.digest) {
      return InvalidArgument(fmt::format("blob {}: the registry sent content whose digest is {}",
                                         blob.digest.str(), Sha256Of(body).str()));
    }
    return body;
  }
  return Unavailable(
      fmt::format("blob {}: more than {} redirects", blob.digest.str(), kMaxRedirects));
}

namespace {

// Where an upload continues: the Location of a 202, made a path on the
// registry (Distribution answers absolute URLs, others paths).
Result<std::string> UploadLocation(const httplib::Response& response, const std::string& origin,
                                   const std::string& registry) {
  const std::string location = response.get_header_value("Location");
  if (location.empty()) {
    return Unavailable(fmt::format("registry {} started an upload without a Location", registry));
  }
  const Url url = ResolveUrl(origin, location);
  if (url.origin != origin) {
    return Unavailable(
        fmt::format("registry {} moved an upload to another host ({}), which "
                    "perch does not follow",
                    registry, url.origin));
  }
  return url.path;
}

}  // namespace

Result<BlobPush> RegistryClient::PushBlob(const std::string& repository, const Digest& digest,
                                          uint64_t size, const std::filesystem::path& path,
                                          const std::string& mount_from,
                                          const TransferProgress& progress) {
  PERCH_ASSIGN_OR_RETURN(const std::optional<uint64_t> present, BlobSize(repository, digest));
  if (present) {
    if (progress) {
      progress(size, size);
    }
    return BlobPush::kPresent;
  }
  std::string start = fmt::format("/v2/{}/blobs/uploads/", repository);
  if (!mount_from.empty() && mount_from != repository) {
    start = AppendQuery(start, fmt::format("mount={}&from={}", digest.str(), mount_from));
  }
  PERCH_ASSIGN_OR_RETURN(auto started,
                         impl_->Call("POST " + start, {}, [&](auto& client, const auto& headers) {
                           return client.Post(start, headers, "", "application/octet-stream");
                         }));
  if (started->status == 201) {
    if (progress) {
      progress(size, size);
    }
    return BlobPush::kMounted;
  }
  if (started->status != 202) {
    return impl_->HttpError("POST " + start, *started);
  }
  PERCH_ASSIGN_OR_RETURN(std::string location,
                         UploadLocation(*started, impl_->origin(), registry()));
  const uint64_t chunk = impl_->options().chunk_size;
  if (size <= chunk) {
    PERCH_ASSIGN_OR_RETURN(const std::string bytes, ReadFileRange(path, 0, size));
    const std::string put = AppendQuery(location, "digest=" + digest.str());
    PERCH_ASSIGN_OR_RETURN(auto done,
                           impl_->Call("PUT blob", {}, [&](auto& client, const auto& headers) {
                             return client.Put(put, headers, bytes, "application/octet-stream");
                           }));
    if (done->status != 201) {
      return impl_->HttpError(fmt::format("PUT blob {}", digest.str()), *done);
    }
    if (progress) {
      progress(size, size);
    }
    return BlobPush::kUploaded;
  }
  for (uint64_t offset = 0; offset < size; offset += chunk) {
    const uint64_t length = std::min(chunk, size - offset);
    PERCH_ASSIGN_OR_RETURN(const std::string bytes, ReadFileRange(path, offset, length));
    const httplib::Headers range = {
        {"Content-Range", fmt::format("{}-{}", offset, offset + length - 1)}};
    PERCH_ASSIGN_OR_RETURN(
        auto patched, impl_->Call("PATCH blob", range, [&](auto& client, const auto& headers) {
          return client.Patch(location, headers, bytes, "application/octet-stream");
        }));
    if (patched->status != 202) {
      return impl_->HttpError(
          fmt::format("PATCH blob {} (bytes {}-{})", digest.str(), offset, offset + length - 1),
          *patched);
    }
    PERCH_ASSIGN_OR_RETURN(location, UploadLocation(*patched, impl_->origin(), registry()));
    if (progress) {
      progress(offset + length, size);
    }
  }
  const std::string put = AppendQuery(location, "digest=" + digest.str());
  PERCH_ASSIGN_OR_RETURN(auto done,
                         impl_->Call("PUT blob", {}, [&](auto& client, const auto& headers) {
                           return client.Put(put, headers, "", "application/octet-stream");
                         }));
  if (done->status != 201) {
    return impl_->HttpError(fmt::format("PUT blob {}", digest.str()), *done);
  }
  return BlobPush::kUploaded;
}

Result<bool> RegistryClient::MountBlob(const std::string& repository, const Digest& digest,
                                       const std::string& from) {
  PERCH_ASSIGN_OR_RETURN(const std::optional<uint64_t> present, BlobSize(repository, digest));
  if (present) {
    return true;
  }
  const std::string path =
      fmt::format("/v2/{}/blobs/uploads/?mount={}&from={}", repository, digest.str(), from);
  PERCH_ASSIGN_OR_RETURN(auto started,
                         impl_->Call("POST " + path, {}, [&](auto& client, const auto& headers) {
                           return client.Post(path, headers, "", "application/octet-stream");
                         }));
  if (started->status == 201) {
    return true;
  }
  if (started->status != 202) {
    return impl_->HttpError("POST " + path, *started);
  }
  // The registry opened an upload instead; nothing will be sent to it.
  auto location = UploadLocation(*started, impl_->origin(), registry());
  if (location.ok()) {
    const std::string cancel = *location;
    (void)impl_->Call("DELETE upload", {}, [&](auto& client, const auto& headers) {
      return client.Delete(cancel, headers);
    });
  }
  return false;
}

Result<BlobPush> RegistryClient::PushSmallBlob(const std::string& repository,
                                               const std::string& bytes) {
  const Digest digest = Sha256Of(bytes);
  PERCH_ASSIGN_OR_RETURN(const std::optional<uint64_t> present, BlobSize(repository, digest));
  if (present) {
    return BlobPush::kPresent;
  }
  const std::string put = fmt::format("/v2/{}/blobs/uploads/?digest={}", repository, digest.str());
  // Monolithic upload in one request (POST with digest), with the two-step
  // POST + PUT as the fallback for registries that do not offer it.
  PERCH_ASSIGN_OR_RETURN(auto posted,
                         impl_->Call("POST blob", {}, [&](auto& client, const auto& headers) {
                           return client.Post(put, headers, bytes, "application/octet-stream");
                         }));
  if (posted->status == 201) {
    return BlobPush::kUploaded;
  }
  if (posted->status != 202) {
    return impl_->HttpError(fmt::format("POST blob {}", digest.str()), *posted);
  }
  PERCH_ASSIGN_OR_RETURN(const std::string location,
                         UploadLocation(*posted, impl_->origin(), registry()));
  const std::string finish = AppendQuery(location, "digest=" + digest.str());
  PERCH_ASSIGN_OR_RETURN(auto done,
                         impl_->Call("PUT blob", {}, [&](auto& client, const auto& headers) {
                           return client.Put(finish, headers, bytes, "application/octet-stream");
                         }));
  if (done->status != 201) {
    return impl_->HttpError(fmt::format("PUT blob {}", digest.str()), *done);
  }
  return BlobPush::kUploaded;
}

// Follows `Link: <next>` page by page, collecting the strings under `key`.
Result<std::vector<std::string>> RegistryClient::Impl::ListPages(std::string path, const char* key,
                                                                 const std::string& what) {
  Impl& impl = *this;
  const std::string& registry = options_.registry;
  std::vector<std::string> items;
  for (int page = 0; !path.empty(); ++page) {
    if (page == kMaxPages) {
      return Unavailable(
          fmt::format("registry {}: {} has more than {} pages", registry, what, kMaxPages));
    }
    PERCH_ASSIGN_OR_RETURN(auto result,
                           impl.Call("GET " + path, {}, [&](auto& client, const auto& headers) {
                             return client.Get(path, headers);
                           }));
    if (result->status == 404) {
      return NotFound(fmt::format("registry {}: {} not found ({})", registry, what,
                                  DescribeErrorBody(result->body)));
    }
    if (result->status != 200) {
      return impl.HttpError("GET " + path, *result);
    }
    const json body = json::parse(result->body, nullptr, false);
    if (!body.is_object()) {
      return InvalidArgument(fmt::format("registry {}: {} is not a JSON object", registry, what));
    }
    if (const auto it = body.find(key); it != body.end() && it->is_array()) {
      for (const auto& item : *it) {
        if (item.is_string()) {
          items.push_back(item.get<std::string>());
        }
      }
    }
    const std::string next = NextLink(result->get_header_value("Link"));
    path = next.empty() ? "" : ResolveUrl(impl.origin(), next).path;
  }
  return items;
}

Result<std::vector<std::string>> RegistryClient::ListTags(const std::string& repository) {
  return impl_->ListPages(fmt::format("/v2/{}/tags/list?n=1000", repository), "tags",
                          "repository " + repository);
}

Result<std::vector<std::string>> RegistryClient::Catalog() {
  return impl_->ListPages("/v2/_catalog?n=1000", "repositories", "the catalog");
}

}  // namespace perch
