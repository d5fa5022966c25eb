#include "store/registry_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>

#include "http/client.h"
#include "http/errors.h"
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

// "scheme://host:port" of an absolute URL.
std::string OriginOf(const std::string& url) {
  const size_t scheme = url.find("://");
  return url.substr(0, url.find('/', scheme == std::string::npos ? 0 : scheme + 3));
}

// `location` (absolute, or a path) resolved against the URL it came from.
std::string ResolveUrl(const std::string& base, const std::string& location) {
  if (location.find("://") != std::string::npos) {
    return location;
  }
  return OriginOf(base) + (location.empty() || location.front() != '/' ? "/" : "") + location;
}

// How a message names `url`: its path (a registry's own), without the
// query (a storage URL's signature is a credential).
std::string WithoutOrigin(const std::string& url) {
  const std::string path = url.substr(OriginOf(url).size());
  return path.substr(0, path.find('?'));
}

// The number in a Content-Length header; nullopt when absent or malformed.
std::optional<uint64_t> ParseLength(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
      text.size() > 19) {
    return std::nullopt;
  }
  return std::strtoull(text.c_str(), nullptr, 10);
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
  Impl(RegistryClientOptions options, std::unique_ptr<http::Client> http)
      : options_(std::move(options)),
        origin_(
            (options_.insecure || IsLoopbackRegistry(options_.registry) ? "http://" : "https://") +
            options_.registry),
        http_(std::move(http)) {
    if (!options_.token.empty()) {
      authorization_ = "Bearer " + options_.token;
    }
  }

  const RegistryClientOptions& options() const { return options_; }
  const std::string& origin() const { return origin_; }

  // The registry's URL for `path`.
  std::string Url(const std::string& path) const { return origin_ + path; }

  // Sends `request` (its url a path on the registry, or an absolute URL)
  // with the registry's credentials when it goes to the registry; on a
  // Bearer challenge, fetches a token from its realm and tries once more.
  // Storage elsewhere (a redirect to S3, a CDN) never sees the credentials.
  // A transport failure is Unavailable naming the registry.
  Result<http::ClientResponse> Call(http::ClientRequest request) {
    if (request.url.find("://") == std::string::npos) {
      request.url = Url(request.url);
    }
    const bool ours = OriginOf(request.url) == origin_;
    for (int round = 0; round < 2; ++round) {
      if (ours && !authorization_.empty()) {
        request.headers.Set("Authorization", authorization_);
      }
      auto sent = http_->Send(request);
      if (!sent.ok()) {
        return Transport(sent.status());
      }
      if (!ours || sent->status != 401 || round == 1) {
        return sent;
      }
      const std::string challenge = sent->headers.Value("WWW-Authenticate");
      if (challenge.size() < 7 ||
          !std::equal(challenge.begin(), challenge.begin() + 7, "Bearer ",
                      [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        return sent;
      }
      PERCH_RETURN_IF_ERROR(FetchToken(challenge));
    }
    return Internal("unreachable");
  }

  // `method` `path` with `headers` and nothing else to say.
  Result<http::ClientResponse> Call(const std::string& method, const std::string& path,
                                    http::Headers headers = {}) {
    http::ClientRequest request;
    request.method = method;
    request.url = path;
    request.headers = std::move(headers);
    return Call(std::move(request));
  }

  // The client's failure, said of the registry: "registry HOST is
  // unreachable: connection refused", "registry HOST: TLS: ...".
  Status Transport(const Status& status) const {
    if (status.code() != StatusCode::kUnavailable) {
      return status;
    }
    std::string message = status.message();
    if (message.starts_with(origin_)) {
      message = "registry " + options_.registry + message.substr(origin_.size());
    } else {
      message = fmt::format("registry {}: {}", options_.registry, message);
    }
    if (origin_.starts_with("https://") &&
        message.find("TLS handshake failed") != std::string::npos) {
      message += "; a plain-HTTP registry needs --insecure";
    }
    return Unavailable(std::move(message));
  }

  Status HttpError(const std::string& what, int status, const std::string& body) const {
    std::string detail = DescribeErrorBody(body);
    if (status == 401) {
      detail += "; pass a token with --token or PERCH_TOKEN";
    }
    return Status(http::StatusCodeForHttp(status),
                  fmt::format("registry {}: {} answered HTTP {}{}{}", options_.registry, what,
                              status, detail.empty() ? "" : ": ", detail));
  }
  Status HttpError(const std::string& what, const http::ClientResponse& response) const {
    return HttpError(what, response.status, response.body);
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
    http::ClientRequest request;
    request.url = realm;
    for (const char* key : {"service", "scope"}) {
      if (!params[key].empty()) {
        request.url = AppendQuery(request.url, fmt::format("{}={}", key, UrlEncode(params[key])));
      }
    }
    const std::string service = OriginOf(realm);
    auto result = http_->Send(request);
    if (!result.ok()) {
      return Unavailable(
          fmt::format("token service {} failed: {}", service, result.status().message()));
    }
    if (result->status != 200) {
      return Status(StatusCode::kUnauthenticated,
                    fmt::format("token service {} answered HTTP {}: {}", service, result->status,
                                DescribeErrorBody(result->body)));
    }
    const json body = json::parse(result->body, nullptr, false);
    std::string token;
    if (body.is_object()) {
      const json& value =
          body.contains("token") ? body["token"] : body.value("access_token", json());
      if (value.is_string()) {
        token = value.get<std::string>();
      }
    }
    if (token.empty()) {
      return Status(StatusCode::kUnauthenticated,
                    fmt::format("token service {} answered without a token", service));
    }
    authorization_ = "Bearer " + token;
    return Status::Ok();
  }

  // Follows `Link: <next>` page by page, collecting the strings under `key`.
  Result<std::vector<std::string>> ListPages(std::string path, const char* key,
                                             const std::string& what);

 private:
  const RegistryClientOptions options_;
  const std::string origin_;
  const std::unique_ptr<http::Client> http_;
  std::string authorization_;
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
  PERCH_ASSIGN_OR_RETURN(auto http, http::Client::Create(http::ClientOptions{
                                        .ca_file = options.ca_file,
                                        .connect_timeout = options.connect_timeout,
                                        .read_timeout = options.read_timeout,
                                        .stop = options.stop,
                                    }));
  return std::unique_ptr<RegistryClient>(
      new RegistryClient(std::make_unique<Impl>(std::move(options), std::move(http))));
}

const std::string& RegistryClient::registry() const { return impl_->options().registry; }

Status RegistryClient::Ping() {
  PERCH_ASSIGN_OR_RETURN(auto result, impl_->Call("GET", "/v2/"));
  if (result.status != 200) {
    return impl_->HttpError("GET /v2/", result);
  }
  return Status::Ok();
}

Result<FetchedManifest> RegistryClient::GetManifest(const std::string& repository,
                                                    const std::string& reference) {
  const std::string path = fmt::format("/v2/{}/manifests/{}", repository, reference);
  http::ClientRequest request;
  request.url = path;
  request.headers.Set("Accept", ManifestAccept());
  request.max_body_bytes = kMaxManifestBytes;
  auto result = impl_->Call(std::move(request));
  if (!result.ok() && result.status().code() == StatusCode::kResourceExhausted) {
    return InvalidArgument(fmt::format("manifest {}/{}:{} is larger than {} bytes", registry(),
                                       repository, reference, kMaxManifestBytes));
  }
  PERCH_RETURN_IF_ERROR(result.status());
  if (result->status == 404) {
    return NotFound(fmt::format("{}/{}:{} not found ({})", registry(), repository, reference,
                                DescribeErrorBody(result->body)));
  }
  if (result->status != 200) {
    return impl_->HttpError("GET " + path, *result);
  }
  FetchedManifest manifest{result->body, result->headers.Value("Content-Type"),
                           Sha256Of(result->body)};
  if (reference.starts_with("sha256:")) {
    if (manifest.digest.str() != reference) {
      return InvalidArgument(
          fmt::format("manifest {}/{}@{}: the registry sent content whose "
                      "digest is {}",
                      registry(), repository, reference, manifest.digest.str()));
    }
  } else if (const std::string named = result->headers.Value("Docker-Content-Digest");
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
  http::Headers accept;
  accept.Set("Accept", ManifestAccept());
  PERCH_ASSIGN_OR_RETURN(auto result, impl_->Call("HEAD", path, std::move(accept)));
  if (result.status == 404) {
    return NotFound(fmt::format("{}/{}:{} not found", registry(), repository, reference));
  }
  if (result.status != 200) {
    return impl_->HttpError("HEAD " + path, result);
  }
  auto digest = Digest::Parse(result.headers.Value("Docker-Content-Digest"));
  const auto length = ParseLength(result.headers.Value("Content-Length"));
  if (!digest.ok() || !length) {
    // Without the headers, the body is the only way to know the digest and size.
    PERCH_ASSIGN_OR_RETURN(const FetchedManifest manifest, GetManifest(repository, reference));
    return Descriptor{manifest.media_type, manifest.digest, manifest.bytes.size(), {}};
  }
  return Descriptor{result.headers.Value("Content-Type"), *digest, *length, {}};
}

Result<Digest> RegistryClient::PutManifest(const std::string& repository,
                                           const std::string& reference, const std::string& bytes,
                                           const std::string& media_type) {
  const std::string path = fmt::format("/v2/{}/manifests/{}", repository, reference);
  http::ClientRequest request;
  request.method = "PUT";
  request.url = path;
  request.headers.Set("Content-Type", media_type);
  request.body = bytes;
  PERCH_ASSIGN_OR_RETURN(auto result, impl_->Call(std::move(request)));
  if (result.status != 201 && result.status != 200) {
    return impl_->HttpError("PUT " + path, result);
  }
  const Digest digest = Sha256Of(bytes);
  if (const std::string named = result.headers.Value("Docker-Content-Digest");
      !named.empty() && named != digest.str()) {
    return InvalidArgument(fmt::format("registry {} stored the manifest as {}, expected {}",
                                       registry(), named, digest.str()));
  }
  return digest;
}

Status RegistryClient::DeleteManifest(const std::string& repository, const Digest& digest) {
  const std::string path = fmt::format("/v2/{}/manifests/{}", repository, digest.str());
  PERCH_ASSIGN_OR_RETURN(auto result, impl_->Call("DELETE", path));
  if (result.status == 405) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("registry {} does not allow deleting manifests (Distribution: "
                              "set storage.delete.enabled)",
                              registry()));
  }
  if (result.status == 404) {
    return NotFound(fmt::format("{}/{}@{} not found", registry(), repository, digest.str()));
  }
  if (result.status != 202 && result.status != 200) {
    return impl_->HttpError("DELETE " + path, result);
  }
  return Status::Ok();
}

Result<std::optional<uint64_t>> RegistryClient::BlobSize(const std::string& repository,
                                                         const Digest& digest) {
  const std::string path = fmt::format("/v2/{}/blobs/{}", repository, digest.str());
  PERCH_ASSIGN_OR_RETURN(auto result, impl_->Call("HEAD", path));
  if (result.status == 404) {
    return std::optional<uint64_t>();
  }
  if (result.status != 200) {
    return impl_->HttpError("HEAD " + path, result);
  }
  return std::optional<uint64_t>(ParseLength(result.headers.Value("Content-Length")).value_or(0));
}

Status RegistryClient::FetchBlob(const std::string& repository, const Descriptor& blob,
                                 BlobStore& store, const TransferProgress& progress) {
  if (store.Has(blob.digest)) {
    if (progress) {
      progress(blob.size, blob.size);
    }
    return Status::Ok();
  }
  const BlobSources& peers = impl_->options().blob_sources;
  if (!peers.enabled()) {
    return FetchBlobFromRegistry(repository, blob, store, progress);
  }
  if (FetchBlobFromPeers(peers, repository, blob, store, progress).ok()) {
    return Status::Ok();
  }
  // The registry resumes after what peers sent. Should those bytes have
  // been wrong (a peer that broke off while sending a corrupt blob), the
  // digest check discards them all: start over from the registry alone.
  const bool resumed = store.WrittenSize(BlobWriterName(blob.digest)) > 0;
  const Status fetched = FetchBlobFromRegistry(repository, blob, store, progress);
  if (fetched.code() == StatusCode::kInvalidArgument && resumed) {
    return FetchBlobFromRegistry(repository, blob, store, progress);
  }
  return fetched;
}

Status RegistryClient::FetchBlobFromRegistry(const std::string& repository, const Descriptor& blob,
                                             BlobStore& store, const TransferProgress& progress) {
  const std::string name = BlobWriterName(blob.digest);
  const std::string what = fmt::format("blob {}", blob.digest.str());
  // A partial larger than the blob cannot be a prefix of it.
  const bool resume = store.WrittenSize(name) > 0 && store.WrittenSize(name) <= blob.size;
  PERCH_ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, store.OpenWriter(name, resume));

  std::string url = impl_->Url(fmt::format("/v2/{}/blobs/{}", repository, blob.digest.str()));
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
    std::string error_body;
    http::ClientRequest request;
    request.url = url;
    if (offset > 0) {
      request.headers.Set("Range", fmt::format("bytes={}-", offset));
    }
    request.on_head = [&](int code, const http::Headers& headers) {
      status = code;
      error_body.clear();
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
        const std::string range = headers.Value("Content-Range");
        if (!range.starts_with(fmt::format("bytes {}-", offset))) {
          failure = fmt::format(
              "the registry answered the Range request for bytes {}- with "
              "Content-Range \"{}\"",
              offset, range);
          return false;
        }
      }
      if (status == 200 || status == 206) {
        if (const auto length = ParseLength(headers.Value("Content-Length"))) {
          const uint64_t total = writer->size() + *length;
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
    request.receive_buffer_bytes = kBlobReceiveBufferBytes;
    request.on_body = [&](std::string_view piece) {
      if (status != 200 && status != 206) {
        if (error_body.size() < kMaxErrorBodyBytes) {
          error_body.append(piece.substr(0, kMaxErrorBodyBytes - error_body.size()));
        }
        return true;
      }
      if (writer->size() + piece.size() > blob.size) {
        // Keep the bytes up to the descriptor's size + 1 out: stop here.
        failure = fmt::format("{}: registry sent at least {} bytes, descriptor says {}", what,
                              writer->size() + piece.size(), blob.size);
        overflow = true;
        return false;
      }
      write_status = writer->Append(piece);
      if (!write_status.ok()) {
        return false;
      }
      if (progress) {
        progress(writer->size(), blob.size);
      }
      return true;
    };
    auto result = impl_->Call(std::move(request));
    if (overflow) {
      return InvalidArgument(failure + "; the transfer was stopped and nothing was kept");
    }
    if (!write_status.ok()) {
      return write_status;
    }
    if (!failure.empty()) {
      return InvalidArgument(fmt::format("{}: {}", what, failure));
    }
    if (!result.ok()) {
      writer->Keep();  // what this or an earlier attempt got stays for the next
      if (status == 0) {
        return result.status();  // nothing answered: unreachable, TLS, timeout
      }
      return Unavailable(
          fmt::format("{}: download interrupted: {} (got {} of {} bytes; run again to resume)",
                      what, result.status().message(), writer->size(), blob.size));
    }
    status = result->status;
    if (status >= 300 && status < 400 && result->headers.Has("Location")) {
      url = ResolveUrl(url, result->headers.Value("Location"));
      continue;
    }
    if (status == 416) {
      // What we hold does not fit the blob the registry has; start over next time.
      return Unavailable(fmt::format(
          "{}: the registry refused to resume at byte {}; run again to start over", what, offset));
    }
    if (status != 200 && status != 206) {
      writer->Keep();
      if (status == 404) {
        return NotFound(fmt::format("{} not found in {}/{} ({})", what, registry(), repository,
                                    DescribeErrorBody(error_body)));
      }
      return impl_->HttpError("GET " + WithoutOrigin(url), status, error_body);
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
  std::string url = impl_->Url(fmt::format("/v2/{}/blobs/{}", repository, blob.digest.str()));
  for (int redirects = 0; redirects <= kMaxRedirects; ++redirects) {
    std::string body;
    int status = 0;
    bool overflow = false;
    http::ClientRequest request;
    request.url = url;
    request.on_head = [&](int code, const http::Headers&) {
      status = code;
      body.clear();
      return true;
    };
    request.on_body = [&](std::string_view piece) {
      if (status == 200 && body.size() + piece.size() > blob.size) {
        overflow = true;
        return false;
      }
      body.append(piece.substr(0, kMaxErrorBodyBytes));
      return true;
    };
    auto result = impl_->Call(std::move(request));
    if (overflow) {
      return InvalidArgument(
          fmt::format("blob {}: registry sent more than the {} bytes the "
                      "descriptor says",
                      blob.digest.str(), blob.size));
    }
    PERCH_RETURN_IF_ERROR(result.status());
    status = result->status;
    if (status >= 300 && status < 400 && result->headers.Has("Location")) {
      url = ResolveUrl(url, result->headers.Value("Location"));
      continue;
    }
    if (status != 200) {
      return impl_->HttpError("GET " + WithoutOrigin(url), status, body);
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
Result<std::string> UploadLocation(const http::ClientResponse& response, const std::string& origin,
                                   const std::string& registry) {
  const std::string location = response.headers.Value("Location");
  if (location.empty()) {
    return Unavailable(fmt::format("registry {} started an upload without a Location", registry));
  }
  const std::string url = ResolveUrl(origin + "/", location);
  if (OriginOf(url) != origin) {
    return Unavailable(
        fmt::format("registry {} moved an upload to another host ({}), which "
                    "perch does not follow",
                    registry, OriginOf(url)));
  }
  return url.substr(origin.size());
}

// A request that sends `body` (or a slice of a file) as octet-stream.
http::ClientRequest Upload(const std::string& method, const std::string& path) {
  http::ClientRequest request;
  request.method = method;
  request.url = path;
  request.headers.Set("Content-Type", "application/octet-stream");
  return request;
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
  PERCH_ASSIGN_OR_RETURN(auto started, impl_->Call(Upload("POST", start)));
  if (started.status == 201) {
    if (progress) {
      progress(size, size);
    }
    return BlobPush::kMounted;
  }
  if (started.status != 202) {
    return impl_->HttpError("POST " + start, started);
  }
  PERCH_ASSIGN_OR_RETURN(std::string location,
                         UploadLocation(started, impl_->origin(), registry()));
  const uint64_t chunk = impl_->options().chunk_size;
  if (size <= chunk) {
    http::ClientRequest put = Upload("PUT", AppendQuery(location, "digest=" + digest.str()));
    put.file = http::FileSlice{path, 0, size};
    if (progress) {
      put.progress = [&](uint64_t done, uint64_t) { progress(done, size); };
    }
    PERCH_ASSIGN_OR_RETURN(auto done, impl_->Call(std::move(put)));
    if (done.status != 201) {
      return impl_->HttpError(fmt::format("PUT blob {}", digest.str()), done);
    }
    if (progress) {
      progress(size, size);
    }
    return BlobPush::kUploaded;
  }
  for (uint64_t offset = 0; offset < size; offset += chunk) {
    const uint64_t length = std::min(chunk, size - offset);
    http::ClientRequest patch = Upload("PATCH", location);
    patch.headers.Set("Content-Range", fmt::format("{}-{}", offset, offset + length - 1));
    patch.file = http::FileSlice{path, offset, length};
    if (progress) {
      patch.progress = [&, offset](uint64_t done, uint64_t) { progress(offset + done, size); };
    }
    PERCH_ASSIGN_OR_RETURN(auto patched, impl_->Call(std::move(patch)));
    if (patched.status != 202) {
      return impl_->HttpError(
          fmt::format("PATCH blob {} (bytes {}-{})", digest.str(), offset, offset + length - 1),
          patched);
    }
    PERCH_ASSIGN_OR_RETURN(location, UploadLocation(patched, impl_->origin(), registry()));
    if (progress) {
      progress(offset + length, size);
    }
  }
  PERCH_ASSIGN_OR_RETURN(
      auto done, impl_->Call(Upload("PUT", AppendQuery(location, "digest=" + digest.str()))));
  if (done.status != 201) {
    return impl_->HttpError(fmt::format("PUT blob {}", digest.str()), done);
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
  PERCH_ASSIGN_OR_RETURN(auto started, impl_->Call(Upload("POST", path)));
  if (started.status == 201) {
    return true;
  }
  if (started.status != 202) {
    return impl_->HttpError("POST " + path, started);
  }
  // The registry opened an upload instead; nothing will be sent to it.
  auto location = UploadLocation(started, impl_->origin(), registry());
  if (location.ok()) {
    (void)impl_->Call("DELETE", *location);
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
  // Monolithic upload in one request (POST with digest), with the two-step
  // POST + PUT as the fallback for registries that do not offer it.
  http::ClientRequest post =
      Upload("POST", fmt::format("/v2/{}/blobs/uploads/?digest={}", repository, digest.str()));
  post.body = bytes;
  PERCH_ASSIGN_OR_RETURN(auto posted, impl_->Call(std::move(post)));
  if (posted.status == 201) {
    return BlobPush::kUploaded;
  }
  if (posted.status != 202) {
    return impl_->HttpError(fmt::format("POST blob {}", digest.str()), posted);
  }
  PERCH_ASSIGN_OR_RETURN(const std::string location,
                         UploadLocation(posted, impl_->origin(), registry()));
  http::ClientRequest put = Upload("PUT", AppendQuery(location, "digest=" + digest.str()));
  put.body = bytes;
  PERCH_ASSIGN_OR_RETURN(auto done, impl_->Call(std::move(put)));
  if (done.status != 201) {
    return impl_->HttpError(fmt::format("PUT blob {}", digest.str()), done);
  }
  return BlobPush::kUploaded;
}

// Follows `Link: <next>` page by page, collecting the strings under `key`.
Result<std::vector<std::string>> RegistryClient::Impl::ListPages(std::string path, const char* key,
                                                                 const std::string& what) {
  const std::string& registry = options_.registry;
  std::vector<std::string> items;
  for (int page = 0; !path.empty(); ++page) {
    if (page == kMaxPages) {
      return Unavailable(
          fmt::format("registry {}: {} has more than {} pages", registry, what, kMaxPages));
    }
    PERCH_ASSIGN_OR_RETURN(auto result, Call("GET", path));
    if (result.status == 404) {
      return NotFound(fmt::format("registry {}: {} not found ({})", registry, what,
                                  DescribeErrorBody(result.body)));
    }
    if (result.status != 200) {
      return HttpError("GET " + path, result);
    }
    const json body = json::parse(result.body, nullptr, false);
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
    const std::string next = NextLink(result.headers.Value("Link"));
    if (next.empty()) {
      break;
    }
    const std::string url = ResolveUrl(origin_ + "/", next);
    if (OriginOf(url) != origin_) {
      return Unavailable(fmt::format("registry {}: the next page of {} is on another host ({})",
                                     registry, what, OriginOf(url)));
    }
    path = url.substr(origin_.size());
  }
  return items;
}

Result<std::optional<std::string>> RegistryClient::GetReferrers(const std::string& repository,
                                                                const Digest& subject,
                                                                const std::string& artifact_type) {
  std::string path = fmt::format("/v2/{}/referrers/{}", repository, subject.str());
  if (!artifact_type.empty()) {
    path = AppendQuery(path, "artifactType=" + UrlEncode(artifact_type));
  }
  http::ClientRequest request;
  request.url = path;
  request.headers.Set("Accept", std::string(media_type::kOciIndex));
  request.max_body_bytes = kMaxManifestBytes;
  auto result = impl_->Call(std::move(request));
  if (!result.ok() && result.status().code() == StatusCode::kResourceExhausted) {
    return InvalidArgument(fmt::format("the referrers of {}/{}@{} are more than {} bytes",
                                       registry(), repository, subject.str(), kMaxManifestBytes));
  }
  PERCH_RETURN_IF_ERROR(result.status());
  if (result->status == 404) {
    return std::optional<std::string>();
  }
  if (result->status != 200) {
    return impl_->HttpError("GET " + path, *result);
  }
  return std::optional<std::string>(std::move(result->body));
}

std::string ReferrersTagOf(const Digest& subject) { return "sha256-" + std::string(subject.hex()); }

Result<std::vector<std::string>> RegistryClient::ListTags(const std::string& repository) {
  return impl_->ListPages(fmt::format("/v2/{}/tags/list?n=1000", repository), "tags",
                          "repository " + repository);
}

Result<std::vector<std::string>> RegistryClient::Catalog() {
  return impl_->ListPages("/v2/_catalog?n=1000", "repositories", "the catalog");
}

}  // namespace perch
