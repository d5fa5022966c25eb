// The memory figures behind --memory-limit: parsing a size, finding the
// default limit (the cgroup's, else the memory available at start), and the
// process's resident set size.
//
// Threading: free functions without shared state; safe from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "core/status.h"

namespace perch {

// "0" (no limit), a byte count, or a count with a binary suffix K, M, G or T
// (optionally followed by "i" and/or "B": 512M, 1.5GiB). InvalidArgument
// otherwise, saying what is accepted.
Result<int64_t> ParseMemorySize(std::string_view text);

// --memory-limit's value: "auto" (DefaultMemoryLimit) or a size as
// ParseMemorySize reads it; 0 means no limit.
Result<int64_t> ResolveMemoryLimit(std::string_view flag);

// The limit to use when none is given: nine tenths of the cgroup's memory
// limit (v2 memory.max, else v1 memory.limit_in_bytes) when it has one, else
// of MemAvailable in `meminfo`. 0 when neither can be read.
int64_t DefaultMemoryLimit(const std::filesystem::path& cgroup_root = "/sys/fs/cgroup",
                           const std::filesystem::path& meminfo = "/proc/meminfo");

// This process's resident set size in bytes (from /proc/self/statm); 0 when
// it cannot be read.
int64_t ResidentBytes();

}  // namespace perch
