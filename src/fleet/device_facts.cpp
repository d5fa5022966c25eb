#include "fleet/device_facts.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

namespace perch {
namespace {

std::string Trim(std::string_view text) {
  const auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) {
    return {};
  }
  const auto end = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(begin, end - begin + 1));
}

std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  std::istringstream in{std::string(text)};
  for (std::string word; in >> word;) {
    words.push_back(word);
  }
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  return words;
}

// "CPU part : 0xd08" of an Arm core, by its name: Arm's /proc/cpuinfo has
// no model name.
std::string ArmCoreName(std::string_view part) {
  static constexpr std::pair<std::string_view, std::string_view> kParts[] = {
      {"0xd03", "Cortex-A53"},   {"0xd04", "Cortex-A35"},  {"0xd05", "Cortex-A55"},
      {"0xd07", "Cortex-A57"},   {"0xd08", "Cortex-A72"},  {"0xd09", "Cortex-A73"},
      {"0xd0a", "Cortex-A75"},   {"0xd0b", "Cortex-A76"},  {"0xd0c", "Neoverse-N1"},
      {"0xd0d", "Cortex-A77"},   {"0xd40", "Neoverse-V1"}, {"0xd41", "Cortex-A78"},
      {"0xd42", "Cortex-A78AE"}, {"0xd46", "Cortex-A510"}, {"0xd47", "Cortex-A710"},
      {"0xd49", "Neoverse-N2"},  {"0xd4f", "Neoverse-V2"}};
  for (const auto& [id, name] : kParts) {
    if (id == part) {
      return std::string(name);
    }
  }
  return "Arm core " + std::string(part);
}

void ReadCpuInfo(const std::filesystem::path& file, DeviceFacts& facts) {
  std::ifstream in(file);
  std::string arm_part;
  int64_t processors = 0;
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    const std::string key = Trim(std::string_view(line).substr(0, colon));
    const std::string value = Trim(std::string_view(line).substr(colon + 1));
    if (key == "processor") {
      ++processors;
    } else if ((key == "model name" || key == "Model" || key == "Hardware") &&
               facts.cpu_model.empty()) {
      facts.cpu_model = value;
    } else if ((key == "flags" || key == "Features") && facts.cpu_features.empty()) {
      facts.cpu_features = Words(value);
    } else if (key == "CPU part" && arm_part.empty()) {
      arm_part = value;
    }
  }
  if (facts.cpu_model.empty() && !arm_part.empty()) {
    facts.cpu_model = ArmCoreName(arm_part);
  }
  facts.cores = processors;
}

// Online CPUs where /proc/cpuinfo lists none (some emulators and kernels).
int64_t OnlineCpus() {
  const long count = sysconf(_SC_NPROCESSORS_ONLN);
  return count > 0 ? count : 0;
}

int64_t ReadMemTotal(const std::filesystem::path& file) {
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("MemTotal:", 0) == 0) {
      std::istringstream fields(line.substr(9));
      int64_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

// "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..."
// or "... Open Kernel Module for aarch64  540.4.0  Release Build ...": the
// first word after "Kernel Module" that starts with a digit.
std::string NvidiaDriverVersion(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  if (!std::getline(in, line)) {
    return {};
  }
  const auto module = line.find("Kernel Module");
  if (module == std::string::npos) {
    return {};
  }
  std::istringstream rest(line.substr(module + 13));
  for (std::string word; rest >> word;) {
    if (std::isdigit(static_cast<unsigned char>(word[0])) != 0) {
      return word;
    }
  }
  return {};
}

}  // namespace

DeviceFacts ReadDeviceFacts(const std::filesystem::path& root, std::string_view architecture) {
  DeviceFacts facts;
  facts.architecture = std::string(architecture);
  ReadCpuInfo(root / "proc/cpuinfo", facts);
  if (facts.cores == 0 && root == "/") {
    facts.cores = OnlineCpus();
  }
  facts.memory_bytes = ReadMemTotal(root / "proc/meminfo");
  std::error_code error;
  const std::filesystem::path nvidia = root / "proc/driver/nvidia/version";
  if (std::filesystem::exists(nvidia, error)) {
    const std::string version = NvidiaDriverVersion(nvidia);
    facts.accelerators.push_back(version.empty() ? "nvidia" : "nvidia:" + version);
  }
  return facts;
}

bool FactSelector::Matches(const DeviceFacts& facts) const {
  if (facts.cores < min_cores || facts.memory_bytes < min_memory_bytes) {
    return false;
  }
  for (const std::string& kind : accelerators) {
    const bool found = std::any_of(
        facts.accelerators.begin(), facts.accelerators.end(), [&](const std::string& accelerator) {
          return accelerator == kind || accelerator.rfind(kind + ":", 0) == 0;
        });
    if (!found) {
      return false;
    }
  }
  return std::all_of(cpu_features.begin(), cpu_features.end(), [&](const std::string& feature) {
    return std::find(facts.cpu_features.begin(), facts.cpu_features.end(), feature) !=
           facts.cpu_features.end();
  });
}

}  // namespace perch
