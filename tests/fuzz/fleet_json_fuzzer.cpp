// The fleet's JSON bodies (fleet/fleet_json.h): the desired state an agent
// reads from the hub, and the requests the hub's API takes.
// Input: the first byte picks the parser, the rest is its JSON.
#include <cstddef>
#include <cstdint>

#include "fleet/fleet_json.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view json = perch::fuzz::AsText(data + 1, size - 1);
  switch (data[0] % 8) {
    case 0: {
      const auto state = perch::ParseDesiredState(json);
      if (state.ok()) {
        (void)perch::ParseDesiredState(perch::ToJson(*state));
      }
      break;
    }
    case 1:
      (void)perch::ParseHeartbeat(json);
      break;
    case 2:
      (void)perch::ParseDeploymentSpec(json);
      break;
    case 3:
      (void)perch::ParseDeviceSpec(json);
      break;
    case 4:
      (void)perch::ParseLocationSpec(json);
      break;
    case 5:
      (void)perch::ParseSelector(json);
      break;
    case 6:
      (void)perch::ParseEnrolment(json);
      break;
    default:
      (void)perch::ParseFleetStatus(json);
      break;
  }
  return 0;
}
