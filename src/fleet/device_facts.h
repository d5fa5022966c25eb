// What a device is, as it tells the hub at enrolment and in every
// heartbeat: CPU, memory, accelerators, the perch and ONNX Runtime it runs.
// Deployments select on them with a FactSelector (docs/fleet.md "Device
// facts"), e.g. only devices with an NVIDIA GPU, or with 4 GiB of memory.
//
// Threading: plain values and stateless functions; safe from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace perch {

struct DeviceFacts {
  std::string architecture{};  // "amd64", "arm64", ... (uname's machine, Debian's name)
  std::string cpu_model{};     // "Intel(R) Xeon(R) ...", "Cortex-A72", ...
  std::vector<std::string> cpu_features{};  // /proc/cpuinfo flags (x86) or Features (Arm), sorted
  int64_t cores = 0;                        // online logical CPUs
  int64_t memory_bytes = 0;                 // MemTotal
  // Accelerators found, as "kind" or "kind:detail": "nvidia:535.104.05"
  // (the NVIDIA driver and its version).
  std::vector<std::string> accelerators{};
  std::string perch_version{};
  std::string onnxruntime_version{};
  // ONNX Runtime's execution providers in this build ("cuda", "cpu", ...).
  std::vector<std::string> execution_providers{};

  bool operator==(const DeviceFacts&) const = default;
};

// Reads the facts the kernel shows under `root` (normally "/": the tests
// pass a folder laid out like it): proc/cpuinfo, proc/meminfo and
// proc/driver/nvidia/version. What cannot be read stays empty or 0; a
// device is never refused for what it does not say. The versions and
// providers are the caller's (cli wires the engine's).
DeviceFacts ReadDeviceFacts(const std::filesystem::path& root, std::string_view architecture);

// Which facts a deployment needs; an empty one matches every device. Each
// given field must hold: every listed accelerator kind and CPU feature
// present, at least so many cores and bytes of memory.
struct FactSelector {
  std::vector<std::string> accelerators{};  // kinds: "nvidia"
  std::vector<std::string> cpu_features{};  // "avx2", "asimd", ...
  int64_t min_cores = 0;
  int64_t min_memory_bytes = 0;

  bool empty() const {
    return accelerators.empty() && cpu_features.empty() && min_cores == 0 && min_memory_bytes == 0;
  }
  bool Matches(const DeviceFacts& facts) const;
  bool operator==(const FactSelector&) const = default;
};

// JSON forms (docs/fleet.md): DeviceFacts as in the enrolment and heartbeat
// bodies, FactSelector as a deployment selector's "facts". Parsers answer
// InvalidArgument naming the field ("facts.cores: must be an integer").
std::string ToJson(const DeviceFacts& facts);
std::string ToJson(const FactSelector& selector);
Result<DeviceFacts> ParseDeviceFacts(std::string_view json);
Result<FactSelector> ParseFactSelector(std::string_view json);

}  // namespace perch
