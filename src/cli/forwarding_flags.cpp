#include "cli/forwarding_flags.h"

#include <chrono>
#include <utility>

namespace perch::cli {

void AddForwardingFlags(CLI::App& app, ForwardingFlags& flags) {
  app.add_option("--forward-timeout", flags.timeout_seconds,
                 "Seconds a peer may stay silent on a forwarded REST request (then the next peer "
                 "serving the model is tried), and the deadline of forwarded gRPC calls whose "
                 "client set none")
      ->envname("PERCH_FORWARD_TIMEOUT")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
}

ForwardingOptions MakeForwardingOptions(const ForwardingFlags& flags, std::string device,
                                        std::string ca_file) {
  ForwardingOptions options;
  options.device = std::move(device);
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.timeout_seconds * 1000));
  options.ca_file = std::move(ca_file);
  return options;
}

}  // namespace perch::cli
