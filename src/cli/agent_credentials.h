// The agent's credentials and TLS material, as `perch serve` resolves them
// from its flags: the management token (given, generated into the state
// folder, or none on loopback) and the check of the TLS files.
//
// Threading: plain functions, called from the controlling thread at start.
#pragma once

#include <filesystem>
#include <string>

#include "core/log.h"
#include "core/status.h"
#include "http/server.h"

namespace perch::cli {

// Whether `host` is a loopback address or name (127.0.0.0/8, ::1, localhost).
bool IsLoopbackHost(const std::string& host);

struct ManagementToken {
  std::string token;           // empty: the management endpoints are open
  std::filesystem::path file;  // set when the token was read from or written to a file
};

// `given` when not empty; none when the agent listens on loopback only;
// otherwise the token in <state>/management-token, generated (mode 0600) on
// first start. Unavailable when the file cannot be written or read.
Result<ManagementToken> ResolveManagementToken(const std::string& given, const std::string& host,
                                               const std::filesystem::path& state,
                                               const Logger& logger);

// Ok when the TLS options name readable files whose key matches the
// certificate (and a client CA that loads); the error names the file.
Status CheckTls(const http::TlsOptions& tls);

}  // namespace perch::cli
