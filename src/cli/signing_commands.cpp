// `perch sign` and `perch verify`: OMS v1.0 model signatures from the
// command line, interoperable with the reference `model_signing` tool.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "signing/signing.h"

namespace perch::cli {
namespace {

struct SignCommandOptions {
  std::filesystem::path path;
  std::filesystem::path key;
  std::filesystem::path signature;
  std::vector<std::filesystem::path> ignore_paths;
};

int Fail(const Status& status) {
  std::fprintf(stderr, "perch: %s\n", status.message().c_str());
  return 1;
}

int RunSign(const SignCommandOptions& options) {
  auto key = signing::LoadPrivateKey(options.key);
  if (!key.ok()) {
    return Fail(key.status());
  }
  const Status status = signing::SignModel(
      options.path, *key, signing::SignOptions{options.signature, options.ignore_paths});
  if (!status.ok()) {
    return Fail(status);
  }
  const auto where =
      options.signature.empty() ? signing::DefaultSignaturePath(options.path) : options.signature;
  std::printf("signed %s: %s\n", options.path.c_str(), where.c_str());
  return 0;
}

int RunVerify(const SignCommandOptions& options) {
  auto keys = signing::LoadPublicKeys({options.key});
  if (!keys.ok()) {
    return Fail(keys.status());
  }
  auto verified = signing::VerifyModel(
      options.path, *keys, signing::VerifyOptions{options.signature, options.ignore_paths});
  if (!verified.ok()) {
    std::fprintf(stderr, "perch: %s does not verify: %s\n", options.path.c_str(),
                 verified.status().message().c_str());
    return 1;
  }
  std::printf("verified %s: %zu files, root digest %s, key %s\n", options.path.c_str(),
              verified->files.size(), verified->root_digest.c_str(), verified->key_source.c_str());
  return 0;
}

void AddCommonOptions(CLI::App& app, SignCommandOptions& options) {
  app.add_option("path", options.path, "The model: a folder, or a single model file")->required();
  app.add_option("--signature", options.signature,
                 "The signature file (default: PATH/model.sig, or model.sig beside a file)");
  app.add_option("--ignore-paths", options.ignore_paths,
                 "Files or folders of the model the signature does not cover (besides .git*, "
                 ".github and the signature itself)")
      ->expected(1, -1);
}

}  // namespace

CommandRunner AddSignCommand(CLI::App& app) {
  auto options = std::make_shared<SignCommandOptions>();
  AddCommonOptions(app, *options);
  app.add_option("--key", options->key, "ECDSA private key, PEM (P-256, P-384 or P-521)")
      ->required();
  return [options] { return RunSign(*options); };
}

CommandRunner AddVerifyCommand(CLI::App& app) {
  auto options = std::make_shared<SignCommandOptions>();
  AddCommonOptions(app, *options);
  app.add_option("--key", options->key, "The signer's ECDSA public key, PEM")->required();
  return [options] { return RunVerify(*options); };
}

}  // namespace perch::cli
