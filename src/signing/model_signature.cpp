// OMS model signatures: the in-toto Statement over a model's files, how the
// reference signer (model_signing) writes it and how its verifier checks it.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "core/files.h"
#include "signing/internal.h"
#include "signing/signing.h"

namespace perch::signing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kStatementType = "https://in-toto.io/Statement/v1";
// What the reference signer leaves out of every model by default.
constexpr std::array<std::string_view, 5> kDefaultIgnores = {".git", ".gitattributes", ".github",
                                                             ".gitignore", kSignatureFileName};
constexpr int kMaxDepth = 64;

Status Refused(std::string message) { return InvalidArgument(std::move(message)); }

bool IsLowerHex(std::string_view text, size_t length) {
  return text.size() == length && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A resource name as the specification allows it: relative, '/'-separated,
// no empty, "." or ".." component, no NUL.
Status CheckResourceName(std::string_view name) {
  if (name.empty()) {
    return Refused("the signature names a resource with an empty name");
  }
  if (name.front() == '/') {
    return Refused("the signature names resource \"" + std::string(name) +
                   "\" with a leading '/': names must be relative to the model");
  }
  if (name.find('\0') != std::string_view::npos || name.find('\\') != std::string_view::npos) {
    return Refused("the signature names resource \"" + std::string(name) +
                   "\" with a NUL or backslash");
  }
  size_t start = 0;
  while (start <= name.size()) {
    const size_t end = std::min(name.find('/', start), name.size());
    const std::string_view part = name.substr(start, end - start);
    if (part == "..") {
      return Refused("the signature names resource \"" + std::string(name) +
                     "\" with '..': names must stay inside the model");
    }
    if (part.empty() || part == ".") {
      return Refused("the signature names resource \"" + std::string(name) +
                     "\" with an empty or '.' component");
    }
    start = end + 1;
  }
  return Status::Ok();
}

bool LeavesTheFolder(const fs::path& relative) {
  return relative.empty() || *relative.begin() == "..";
}

// The relative '/'-name of an ignore path. A path that names something
// inside the model, as given from the working folder (what the reference
// CLI takes: DIR/ignore-me), counts as that; any other relative path is a
// name inside the model (ignore-me).
Result<std::string> IgnoreName(const fs::path& model_root, const fs::path& path) {
  std::error_code error;
  const fs::path root = fs::absolute(model_root, error).lexically_normal();
  fs::path relative = fs::absolute(path, error).lexically_normal().lexically_relative(root);
  if (LeavesTheFolder(relative) && !path.is_absolute()) {
    relative = path.lexically_normal();
  }
  if (LeavesTheFolder(relative)) {
    return InvalidArgument("ignore path " + path.string() + " is outside the model folder " +
                           model_root.string());
  }
  std::string name = relative.generic_string();
  while (!name.empty() && name.back() == '/') {
    name.pop_back();
  }
  return name;
}

bool IsIgnored(const std::string& name, const std::set<std::string, std::less<>>& ignores) {
  for (size_t slash = name.find('/'); slash != std::string::npos;
       slash = name.find('/', slash + 1)) {
    if (ignores.count(std::string_view(name).substr(0, slash)) != 0) {
      return true;
    }
  }
  return ignores.count(name) != 0;
}

struct ModelFile {
  std::string name;
  fs::path path;
};

// Lists the files of a model folder, recursively, minus the ignored ones.
Status CollectFiles(const fs::path& folder, const std::string& prefix,
                    const std::set<std::string, std::less<>>& ignores, bool allow_symlinks,
                    int depth, std::vector<ModelFile>& out) {
  if (depth > kMaxDepth) {
    return Refused("the model nests folders deeper than " + std::to_string(kMaxDepth) +
                   " levels at " + prefix);
  }
  std::error_code error;
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
    const std::string name = prefix + it->path().filename().string();
    if (IsIgnored(name, ignores)) {
      continue;
    }
    fs::file_status status = it->symlink_status(error);
    if (error) {
      break;
    }
    if (fs::is_symlink(status)) {
      if (!allow_symlinks) {
        return Refused("\"" + name + "\" is a symlink and the signature does not allow symlinks");
      }
      status = fs::status(it->path(), error);
      if (error) {
        return Refused("\"" + name + "\" is a symlink to nothing");
      }
    }
    if (fs::is_directory(status)) {
      PERCH_RETURN_IF_ERROR(
          CollectFiles(it->path(), name + "/", ignores, allow_symlinks, depth + 1, out));
    } else if (fs::is_regular_file(status)) {
      out.push_back({name, it->path()});
    } else {
      return Refused("\"" + name + "\" is neither a file nor a folder");
    }
  }
  if (error) {
    return Internal("cannot list " + folder.string() + ": " + error.message());
  }
  return Status::Ok();
}

// Closes the file it holds.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
};

// The sha256 of a file (hex), read in large blocks: hashing, not system
// calls, should bound the time.
Result<std::string> HashFile(const fs::path& path) {
  const FileDescriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) {
    return Internal("cannot read " + path.string() + ": " + std::strerror(errno));
  }
  ::posix_fadvise(file.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return Internal("cannot start sha256");
  }
  constexpr size_t kBlock = 1u << 20;
  const std::unique_ptr<char[]> buffer(new char[kBlock]);
  for (;;) {
    const ssize_t n = ::read(file.get(), buffer.get(), kBlock);
    if (n == 0) {
      break;
    }
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Internal("cannot read " + path.string() + ": " + std::strerror(errno));
    }
    EVP_DigestUpdate(ctx.get(), buffer.get(), static_cast<size_t>(n));
  }
  std::string digest(32, '\0');
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(digest.data()), &length);
  return HexOf(digest);
}

struct Layout {
  bool single_file = false;
  fs::path root;  // the model folder, or the folder holding the single file
};

Result<Layout> LayoutOf(const fs::path& model_path) {
  std::error_code error;
  const fs::file_status status = fs::symlink_status(model_path, error);
  if (error || !fs::exists(status)) {
    return NotFound("model path " + model_path.string() + " does not exist");
  }
  if (fs::is_symlink(status)) {
    return Refused("model path " + model_path.string() +
                   " is a symlink; give the folder or file it points to");
  }
  if (fs::is_directory(status)) {
    return Layout{false, model_path};
  }
  if (fs::is_regular_file(status)) {
    const fs::path parent = model_path.parent_path();
    return Layout{true, parent.empty() ? fs::path(".") : parent};
  }
  return Refused("model path " + model_path.string() + " is neither a file nor a folder");
}

std::string SubjectName(const fs::path& model_path) {
  std::error_code error;
  const fs::path absolute = fs::absolute(model_path, error).lexically_normal();
  std::string name = absolute.filename().string();
  if (name.empty()) {
    name = absolute.parent_path().filename().string();
  }
  return name;
}

// The model's files (name order) under the ignore rules.
Result<std::vector<ModelFile>> ModelFiles(const fs::path& model_path, const Layout& layout,
                                          const std::set<std::string, std::less<>>& ignores,
                                          bool allow_symlinks) {
  std::vector<ModelFile> files;
  if (layout.single_file) {
    files.push_back({model_path.filename().string(), model_path});
  } else {
    PERCH_RETURN_IF_ERROR(CollectFiles(layout.root, "", ignores, allow_symlinks, 0, files));
  }
  std::sort(files.begin(), files.end(),
            [](const ModelFile& a, const ModelFile& b) { return a.name < b.name; });
  return files;
}

Result<std::set<std::string, std::less<>>> Ignores(const fs::path& model_root,
                                                   const std::vector<fs::path>& given,
                                                   const fs::path& signature_path) {
  std::set<std::string, std::less<>> ignores(kDefaultIgnores.begin(), kDefaultIgnores.end());
  for (const fs::path& path : given) {
    PERCH_ASSIGN_OR_RETURN(std::string name, IgnoreName(model_root, path));
    ignores.insert(std::move(name));
  }
  auto signature = IgnoreName(model_root, signature_path);
  if (signature.ok() && !signature->empty()) {
    ignores.insert(std::move(signature).value());
  }
  return ignores;
}

struct Subject {
  std::string name;
  std::string sha256;
};

// The statement's subject and predicate, once its type, predicate type and
// single sha256 subject are as expected.
Result<std::pair<Subject, json>> ParseStatement(std::string_view payload,
                                                std::string_view predicate_type) {
  const json statement = json::parse(payload, nullptr, false);
  if (statement.is_discarded() || !statement.is_object()) {
    return Refused("the signed payload is not a JSON in-toto Statement");
  }
  const auto type = statement.find("_type");
  if (type == statement.end() || !type->is_string() || *type != kStatementType) {
    return Refused("the signed payload is not an in-toto Statement v1 (_type " +
                   std::string(kStatementType) + ")");
  }
  const auto predicate_it = statement.find("predicateType");
  if (predicate_it == statement.end() || !predicate_it->is_string()) {
    return Refused("the signed statement has no predicateType");
  }
  if (*predicate_it != predicate_type) {
    return Refused("the signed statement's predicate type is \"" +
                   predicate_it->get<std::string>() + "\", not " + std::string(predicate_type));
  }
  const auto subjects = statement.find("subject");
  if (subjects == statement.end() || !subjects->is_array() || subjects->size() != 1 ||
      !subjects->front().is_object()) {
    return Refused("the signed statement must have exactly one subject");
  }
  const json& subject = subjects->front();
  Subject out;
  if (const auto name = subject.find("name"); name != subject.end() && name->is_string()) {
    out.name = name->get<std::string>();
  }
  const auto digest = subject.find("digest");
  if (digest == subject.end() || !digest->is_object() || !digest->contains("sha256") ||
      !(*digest)["sha256"].is_string() || !IsLowerHex((*digest)["sha256"].get<std::string>(), 64)) {
    return Refused("the signed statement's subject has no sha256 digest");
  }
  out.sha256 = (*digest)["sha256"].get<std::string>();
  const auto predicate = statement.find("predicate");
  json predicate_value = predicate == statement.end() ? json::object() : *predicate;
  if (!predicate_value.is_object()) {
    return Refused("the signed statement's predicate is not an object");
  }
  return std::pair<Subject, json>{std::move(out), std::move(predicate_value)};
}

std::string RootDigestOf(const std::vector<SignedFile>& files) {
  std::string raw;
  for (const SignedFile& file : files) {
    for (size_t i = 0; i + 1 < file.sha256.size(); i += 2) {
      raw.push_back(static_cast<char>(std::stoi(file.sha256.substr(i, 2), nullptr, 16)));
    }
  }
  return HexOf(Sha256Raw(raw));
}

struct ModelPredicate {
  bool allow_symlinks = false;
  std::vector<std::string> ignore_paths;
  std::vector<SignedFile> resources;  // in the signed order
};

Result<ModelPredicate> ParseModelPredicate(const json& predicate, const Subject& subject) {
  ModelPredicate out;
  const auto serialization = predicate.find("serialization");
  if (serialization == predicate.end() || !serialization->is_object()) {
    return Refused("the signed statement has no predicate.serialization");
  }
  const auto method = serialization->find("method");
  if (method == serialization->end() || !method->is_string()) {
    return Refused("the signed statement has no serialization method");
  }
  if (*method == "shards") {
    return Refused(
        "the signature uses the \"shards\" serialization, which perch does not verify: sign "
        "with the \"files\" method");
  }
  if (*method != "files") {
    return Refused("the signature uses serialization method \"" + method->get<std::string>() +
                   "\"; perch verifies \"files\"");
  }
  const auto hash_type = serialization->find("hash_type");
  if (hash_type == serialization->end() || !hash_type->is_string() || *hash_type != "sha256") {
    return Refused("the signature's hash_type is not sha256, the one perch verifies");
  }
  if (const auto allow = serialization->find("allow_symlinks"); allow != serialization->end()) {
    if (!allow->is_boolean()) {
      return Refused("the signature's allow_symlinks is not a boolean");
    }
    out.allow_symlinks = allow->get<bool>();
  }
  if (const auto ignores = serialization->find("ignore_paths"); ignores != serialization->end()) {
    if (!ignores->is_array()) {
      return Refused("the signature's ignore_paths is not a list");
    }
    for (const json& path : *ignores) {
      if (!path.is_string()) {
        return Refused("the signature's ignore_paths holds a non-string");
      }
      out.ignore_paths.push_back(path.get<std::string>());
    }
  }
  const auto resources = predicate.find("resources");
  if (resources == predicate.end() || !resources->is_array()) {
    return Refused("the signed statement has no predicate.resources list");
  }
  std::set<std::string, std::less<>> names;
  for (const json& resource : *resources) {
    if (!resource.is_object()) {
      return Refused("the signature holds a resource that is not an object");
    }
    const auto name = resource.find("name");
    const auto digest = resource.find("digest");
    const auto algorithm = resource.find("algorithm");
    if (name == resource.end() || !name->is_string() || digest == resource.end() ||
        !digest->is_string() || algorithm == resource.end() || !algorithm->is_string()) {
      return Refused("the signature holds a resource without a string name, digest or algorithm");
    }
    const std::string name_text = name->get<std::string>();
    PERCH_RETURN_IF_ERROR(CheckResourceName(name_text));
    if (*algorithm != "sha256") {
      return Refused("the signature hashes resource \"" + name_text + "\" with " +
                     algorithm->get<std::string>() + ", not sha256");
    }
    const std::string digest_text = digest->get<std::string>();
    if (!IsLowerHex(digest_text, 64)) {
      return Refused("the signature's digest of resource \"" + name_text +
                     "\" is not 64 lowercase hex digits");
    }
    if (!names.insert(name_text).second) {
      return Refused("the signature names resource \"" + name_text + "\" twice");
    }
    out.resources.push_back({name_text, digest_text});
  }
  // The root digest covers the raw file digests in the order the statement
  // lists them, as the reference verifier computes it.
  if (RootDigestOf(out.resources) != subject.sha256) {
    return Refused(
        "the signed statement is inconsistent: its subject's root digest does not match its "
        "resources");
  }
  return out;
}

}  // namespace

fs::path DefaultSignaturePath(const fs::path& model_path) {
  std::error_code error;
  if (fs::is_regular_file(model_path, error)) {
    return model_path.parent_path() / kSignatureFileName;
  }
  return model_path / kSignatureFileName;
}

Status SignModel(const fs::path& model_path, const PrivateKey& key, const SignOptions& options) {
  PERCH_ASSIGN_OR_RETURN(const Layout layout, LayoutOf(model_path));
  const fs::path signature_path =
      options.signature_path.empty() ? DefaultSignaturePath(model_path) : options.signature_path;
  PERCH_ASSIGN_OR_RETURN(const auto ignores,
                         Ignores(layout.root, options.ignore_paths, signature_path));
  PERCH_ASSIGN_OR_RETURN(const auto files, ModelFiles(model_path, layout, ignores, false));
  json resources = json::array();
  std::vector<SignedFile> signed_files;
  for (const ModelFile& file : files) {
    PERCH_ASSIGN_OR_RETURN(std::string digest, HashFile(file.path));
    resources.push_back({{"algorithm", "sha256"}, {"digest", digest}, {"name", file.name}});
    signed_files.push_back({file.name, std::move(digest)});
  }
  json ignore_list = json::array();
  for (const std::string& name : ignores) {
    ignore_list.push_back(name);
  }
  const json statement = {
      {"_type", kStatementType},
      {"subject", json::array({{{"name", SubjectName(model_path)},
                                {"digest", {{"sha256", RootDigestOf(signed_files)}}}}})},
      {"predicateType", kModelSignaturePredicate},
      {"predicate",
       {{"serialization",
         {{"method", "files"},
          {"hash_type", "sha256"},
          {"allow_symlinks", false},
          {"ignore_paths", ignore_list}}},
        {"resources", resources}}},
  };
  PERCH_ASSIGN_OR_RETURN(const std::string bundle,
                         SignDsse(kInTotoPayloadType, statement.dump(2), key));
  return WriteFileAtomically(signature_path, bundle);
}

Result<VerifiedModel> VerifyModel(const fs::path& model_path, const std::vector<PublicKey>& trusted,
                                  const VerifyOptions& options) {
  PERCH_ASSIGN_OR_RETURN(const Layout layout, LayoutOf(model_path));
  const fs::path signature_path =
      options.signature_path.empty() ? DefaultSignaturePath(model_path) : options.signature_path;
  std::error_code error;
  if (!fs::is_regular_file(signature_path, error)) {
    return NotFound("the model is not signed: no signature at " + signature_path.string());
  }
  if (fs::file_size(signature_path, error) > kMaxBundleBytes) {
    return Refused("the signature " + signature_path.string() + " is larger than " +
                   std::to_string(kMaxBundleBytes >> 20) + " MiB");
  }
  PERCH_ASSIGN_OR_RETURN(const std::string bundle, ReadFile(signature_path));
  PERCH_ASSIGN_OR_RETURN(const VerifiedPayload verified,
                         VerifyBundle(bundle, trusted, kInTotoPayloadType));
  PERCH_ASSIGN_OR_RETURN(const auto statement,
                         ParseStatement(verified.payload, kModelSignaturePredicate));
  PERCH_ASSIGN_OR_RETURN(const ModelPredicate predicate,
                         ParseModelPredicate(statement.second, statement.first));

  PERCH_ASSIGN_OR_RETURN(auto ignores, Ignores(layout.root, options.ignore_paths, signature_path));
  for (const std::string& name : predicate.ignore_paths) {
    ignores.insert(name);
  }
  PERCH_ASSIGN_OR_RETURN(const auto files,
                         ModelFiles(model_path, layout, ignores, predicate.allow_symlinks));
  std::map<std::string, const SignedFile*, std::less<>> expected;
  for (const SignedFile& resource : predicate.resources) {
    expected.emplace(resource.name, &resource);
  }
  for (const ModelFile& file : files) {
    if (expected.count(file.name) == 0) {
      return Refused("file \"" + file.name +
                     "\" is not covered by the signature (add it to --ignore-paths if it is "
                     "not part of the model)");
    }
  }
  std::set<std::string, std::less<>> present;
  for (const ModelFile& file : files) {
    present.insert(file.name);
  }
  for (const SignedFile& resource : predicate.resources) {
    if (present.count(resource.name) == 0) {
      return Refused("signed file \"" + resource.name + "\" is missing from the model");
    }
  }
  VerifiedModel model;
  for (const ModelFile& file : files) {
    PERCH_ASSIGN_OR_RETURN(std::string digest, HashFile(file.path));
    if (digest != expected.at(file.name)->sha256) {
      return Refused("file \"" + file.name + "\" does not match its signature (it was changed)");
    }
    model.files.push_back({file.name, std::move(digest)});
  }
  model.root_digest = "sha256:" + statement.first.sha256;
  model.key_source = verified.key_source;
  return model;
}

Result<std::string> SignManifestDigest(std::string_view subject_name,
                                       std::string_view manifest_digest, const PrivateKey& key) {
  if (manifest_digest.substr(0, 7) != "sha256:" || !IsLowerHex(manifest_digest.substr(7), 64)) {
    return InvalidArgument("\"" + std::string(manifest_digest) + "\" is not a sha256 digest");
  }
  const json statement = {
      {"_type", kStatementType},
      {"subject",
       json::array({{{"name", subject_name},
                     {"digest", {{"sha256", std::string(manifest_digest.substr(7))}}}}})},
      {"predicateType", kCosignSignPredicate},
      {"predicate", json::object()},
  };
  return SignDsse(kInTotoPayloadType, statement.dump(), key);
}

Status VerifyManifestSignature(std::string_view bundle_json, const std::vector<PublicKey>& trusted,
                               std::string_view manifest_digest) {
  PERCH_ASSIGN_OR_RETURN(const VerifiedPayload verified,
                         VerifyBundle(bundle_json, trusted, kInTotoPayloadType));
  PERCH_ASSIGN_OR_RETURN(const auto statement,
                         ParseStatement(verified.payload, kCosignSignPredicate));
  if ("sha256:" + statement.first.sha256 != manifest_digest) {
    return Refused("the signature was made for another digest (sha256:" + statement.first.sha256 +
                   "), not " + std::string(manifest_digest));
  }
  return Status::Ok();
}

}  // namespace perch::signing
