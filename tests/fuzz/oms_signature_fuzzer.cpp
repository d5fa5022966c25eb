// OMS model signatures as `perch verify` and the agent's trust policy read
// them (signing/signing.h). Input: the first byte picks what is fuzzed.
//  even: the rest is a whole signature file (a Sigstore bundle), verified
//        as a model's, as a DSSE envelope and as a cosign manifest signature;
//  odd:  the rest is the in-toto Statement a trusted key signed, so the
//        statement's checks (resource names, serialization, root digest)
//        run against a real model folder past the signature check.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_input.h"
#include "signing/signing.h"

namespace {

namespace fs = std::filesystem;
using perch::signing::PrivateKey;
using perch::signing::PublicKey;

// A key made for this harness only; it signs nothing else.
constexpr std::string_view kKey = R"(-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIGHD0Ae9YEdmZhYCEFZZ0y8zfS5ZPyncsf1A54DEVBwBoAoGCCqGSM49
AwEHoUQDQgAErXMjdD9OF5lxa4mOLhyDOsQXWsVxPWyWUuX7JtSvuPFN8XwbimoU
iIrg3YDM1cNmmQe+R3n/7mTRInIYpQTrXA==
-----END EC PRIVATE KEY-----
)";

struct Fixture {
  Fixture()
      : key(*PrivateKey::FromPem(kKey, "fuzz.pem")),
        folder(fs::temp_directory_path() / ("oms_fuzz_" + std::to_string(::getpid()))) {
    fs::create_directories(folder / "sub");
    std::ofstream(folder / "model.onnx") << "weights";
    std::ofstream(folder / "sub" / "labels.txt") << "a\n";
  }
  ~Fixture() {
    std::error_code ignored;
    fs::remove_all(folder, ignored);
  }
  PrivateKey key;
  fs::path folder;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Fixture fixture;
  if (size == 0) {
    return 0;
  }
  const std::string_view input = perch::fuzz::AsText(data + 1, size - 1);
  const std::vector<PublicKey> trusted = {fixture.key.public_key()};
  std::string bundle(input);
  if (data[0] % 2 == 1) {
    auto signed_bundle =
        perch::signing::SignDsse(perch::signing::kInTotoPayloadType, input, fixture.key);
    if (!signed_bundle.ok()) {
      return 0;
    }
    bundle = std::move(signed_bundle).value();
  } else {
    (void)perch::signing::VerifyDsse(bundle, trusted, perch::signing::kInTotoPayloadType);
    (void)perch::signing::VerifyManifestSignature(bundle, trusted,
                                                  "sha256:" + std::string(64, 'a'));
  }
  // Plainly written: an fsync per input would bound the fuzzer's speed.
  std::ofstream(fixture.folder / "model.sig", std::ios::binary | std::ios::trunc) << bundle;
  const auto verified = perch::signing::VerifyModel(fixture.folder, trusted);
  // Whatever verifies names only files that exist inside the folder.
  if (verified.ok()) {
    for (const auto& file : verified->files) {
      if (!fs::is_regular_file(fixture.folder / file.name)) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
