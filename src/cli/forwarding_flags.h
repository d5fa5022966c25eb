// The flags of forwarding (api/forwarding.h, docs/network-local.md), and
// the options they make: declared once for `perch serve`.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "api/forwarding.h"

namespace perch::cli {

struct ForwardingFlags {
  double timeout_seconds = 30;  // --forward-timeout
};

void AddForwardingFlags(CLI::App& app, ForwardingFlags& flags);

// The options of an agent named `device` that trusts the CAs of `ca_file`
// (empty: the system's) for https peers.
ForwardingOptions MakeForwardingOptions(const ForwardingFlags& flags, std::string device,
                                        std::string ca_file);

}  // namespace perch::cli
