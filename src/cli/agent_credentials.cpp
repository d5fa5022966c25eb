#include "cli/agent_credentials.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace perch::cli {
namespace {

constexpr const char* kTokenFile = "management-token";

Result<std::string> RandomToken() {
  std::array<unsigned char, 32> bytes{};
  if (getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    return Unavailable("the system's random source could not be read");
  }
  std::string token;
  for (const unsigned char byte : bytes) {
    token += fmt::format("{:02x}", byte);
  }
  return token;
}

Result<std::string> ReadToken(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
    token.pop_back();
  }
  if (!in || token.empty()) {
    return Unavailable(fmt::format(
        "the management token file {} cannot be read or is empty: remove it to have a new "
        "token generated, or pass --management-token",
        file.string()));
  }
  return token;
}

Status WriteToken(const std::filesystem::path& file, const std::string& token) {
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  // O_EXCL: two agents starting on one state folder never overwrite each other's token.
  const int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Unavailable(fmt::format("cannot create the management token file {}: {}", file.string(),
                                   std::strerror(errno)));
  }
  const std::string line = token + "\n";
  const bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  const bool closed = close(fd) == 0;
  if (!written || !closed) {
    std::filesystem::remove(file, ec);
    return Unavailable(fmt::format("cannot write the management token file {}", file.string()));
  }
  return Status::Ok();
}

}  // namespace

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") {
    return true;
  }
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

Result<ManagementToken> ResolveManagementToken(const std::string& given, const std::string& host,
                                               const std::filesystem::path& state,
                                               const Logger& logger) {
  if (!given.empty()) {
    return ManagementToken{.token = given, .file = {}};
  }
  if (IsLoopbackHost(host)) {
    return ManagementToken{};
  }
  const std::filesystem::path file = state / kTokenFile;
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    PERCH_ASSIGN_OR_RETURN(const std::string token, RandomToken());
    PERCH_RETURN_IF_ERROR(WriteToken(file, token));
    logger.Info("generated the management token into {} (mode 0600)", file.string());
  }
  PERCH_ASSIGN_OR_RETURN(std::string token, ReadToken(file));
  logger.Info(
      "listening beyond loopback: index, load and unload need the token in {} "
      "(Authorization: Bearer <token>)",
      file.string());
  return ManagementToken{.token = std::move(token), .file = file};
}

Status CheckTls(const http::TlsOptions& tls) {
  if (!tls.enabled() && tls.key_file.empty() && tls.client_ca_file.empty()) {
    return Status::Ok();
  }
  if (!tls.enabled() || tls.key_file.empty()) {
    return InvalidArgument("--tls-cert and --tls-key go together (and --tls-client-ca needs both)");
  }
  // The server loads and cross-checks the files the way it will at start.
  http::ServerOptions options;
  options.tls = tls;
  return http::Server::Create(std::move(options), Logger::ToStderr(LogLevel::kOff)).status();
}

}  // namespace perch::cli
