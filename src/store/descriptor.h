// The OCI content descriptor: what every manifest says about a blob or a
// child manifest. One definition for the registry (which checks manifests)
// and the client (which follows them).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "store/digest.h"

namespace perch {

struct Descriptor {
  std::string media_type;
  Digest digest = Sha256Of("");  // Digest has no empty state; always set by the parser
  uint64_t size = 0;
  std::map<std::string, std::string> annotations{};
  std::string artifact_type{};  // empty when absent
};

}  // namespace perch
