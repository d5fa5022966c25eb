#include "store/registry.h"

#include <gtest/gtest.h>

#include "store/media_types.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class RegistryTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(testing::TempDir()) /
           ("registry_test_" +
            std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    auto registry = Registry::Open(
        RegistryOptions{.data = dir_, .max_blob_bytes = 100, .max_manifest_bytes = 4096});
    ASSERT_TRUE(registry.ok()) << registry.status().message();
    registry_ = std::move(registry).value();
  }

  Digest Push(const std::string& repository, const std::string& bytes) {
    auto id = registry_->StartUpload(repository);
    EXPECT_TRUE(id.ok()) << id.status().message();
    auto upload = registry_->OpenUpload(repository, *id);
    EXPECT_TRUE(upload.ok()) << upload.status().message();
    EXPECT_TRUE((*upload)->Append(bytes).ok());
    auto digest = (*upload)->Commit(Sha256Of(bytes));
    EXPECT_TRUE(digest.ok()) << digest.status().message();
    return *digest;
  }

  static std::string Manifest(const std::string& config, const std::string& layer,
                              const std::string& extra = "", int64_t layer_size = -1) {
    return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
           R"("config":{"mediaType":"application/vnd.perch.model.config.v1+json","digest":")" +
           Sha256Of(config).str() + R"(","size":)" + std::to_string(config.size()) +
           R"(},"layers":[{"mediaType":"application/octet-stream","digest":")" +
           Sha256Of(layer).str() + R"(","size":)" +
           std::to_string(layer_size < 0 ? static_cast<int64_t>(layer.size()) : layer_size) + "}]" +
           extra + "}";
  }

  size_t FilesWriting() const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(dir_ / "blobs" / "writing"),
                                             fs::directory_iterator()));
  }

  fs::path dir_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(RegistryTest, UploadsInChunksAndServesTheBlobInItsRepositoryOnly) {
  auto id = registry_->StartUpload("models/a");
  ASSERT_TRUE(id.ok());
  {
    auto upload = registry_->OpenUpload("models/a", *id);
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append("hello ").ok());
  }
  EXPECT_EQ(*registry_->UploadSize("models/a", *id), 6u);
  EXPECT_EQ(registry_->UploadSize("models/b", *id).status().code(), StatusCode::kNotFound);
  auto upload = registry_->OpenUpload("models/a", *id);
  ASSERT_TRUE(upload.ok());
  EXPECT_EQ((*upload)->size(), 6u);
  ASSERT_TRUE((*upload)->Append("world").ok());
  auto digest = (*upload)->Commit(Sha256Of("hello world"));
  ASSERT_TRUE(digest.ok()) << digest.status().message();
  auto blob = registry_->StatBlob("models/a", *digest);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(blob->size, 11u);
  EXPECT_EQ(registry_->StatBlob("models/b", *digest).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(registry_->UploadSize("models/a", *id).status().code(), StatusCode::kNotFound);
}

TEST_F(RegistryTest, ADigestMismatchLeavesNothingBehind) {
  auto id = registry_->StartUpload("repo");
  auto upload = registry_->OpenUpload("repo", *id);
  ASSERT_TRUE((*upload)->Append("truncated").ok());
  EXPECT_EQ((*upload)->Commit(Sha256Of("truncated blob")).status().code(),
            StatusCode::kInvalidArgument);
  upload->reset();
  EXPECT_EQ(registry_->StatBlob("repo", Sha256Of("truncated")).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(registry_->UploadSize("repo", *id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FilesWriting(), 0u);
}

TEST_F(RegistryTest, OneByteOverTheLimitCancelsTheUpload) {
  auto id = registry_->StartUpload("repo");
  auto upload = registry_->OpenUpload("repo", *id);
  ASSERT_TRUE((*upload)->Append(std::string(60, 'x')).ok());
  EXPECT_EQ((*upload)->Append(std::string(41, 'x')).code(), StatusCode::kResourceExhausted);
  upload->reset();
  EXPECT_EQ(registry_->UploadSize("repo", *id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FilesWriting(), 0u);
  // Exactly the limit is fine.
  Push("repo", std::string(100, 'y'));
}

TEST_F(RegistryTest, AnUploadIsHeldByOneRequestAtATime) {
  auto id = registry_->StartUpload("repo");
  auto first = registry_->OpenUpload("repo", *id);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(registry_->OpenUpload("repo", *id).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(registry_->CancelUpload("repo", *id).code(), StatusCode::kUnavailable);
  first->reset();
  EXPECT_TRUE(registry_->CancelUpload("repo", *id).ok());
  EXPECT_EQ(registry_->OpenUpload("repo", *id).status().code(), StatusCode::kNotFound);
}

TEST_F(RegistryTest, UnknownAndMalformedUploadIdsAreNotFound) {
  for (const char* id : {"nope", "../../etc/passwd", "", "a/b"}) {
    EXPECT_EQ(registry_->OpenUpload("repo", id).status().code(), StatusCode::kNotFound) << id;
  }
}

TEST_F(RegistryTest, MountsABlobFromAnotherRepository) {
  const Digest blob = Push("source", "shared");
  ASSERT_TRUE(registry_->MountBlob("target", blob, "source").ok());
  EXPECT_TRUE(registry_->StatBlob("target", blob).ok());
  EXPECT_EQ(registry_->MountBlob("third", Sha256Of("absent"), "source").code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(registry_->DeleteBlob("source", blob).ok());
  EXPECT_EQ(registry_->StatBlob("source", blob).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(registry_->StatBlob("target", blob).ok());
}

TEST_F(RegistryTest, StoresManifestsByTagAndDigest) {
  Push("repo", "config");
  Push("repo", "layer");
  const std::string manifest = Manifest("config", "layer");
  auto pushed = registry_->PutManifest("repo", "v1", media_type::kOciManifest, manifest);
  ASSERT_TRUE(pushed.ok()) << pushed.status().message();
  EXPECT_EQ(pushed->digest, Sha256Of(manifest));
  for (const std::string& reference : {std::string("v1"), pushed->digest.str()}) {
    auto got = registry_->GetManifest("repo", reference);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(got->bytes, manifest);
    EXPECT_EQ(got->media_type, media_type::kOciManifest);
  }
  EXPECT_EQ(registry_->ListTags("repo", "", 10)->names, std::vector<std::string>{"v1"});
  ASSERT_TRUE(registry_->DeleteManifest("repo", "v1").ok());
  EXPECT_EQ(registry_->GetManifest("repo", "v1").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(registry_->GetManifest("repo", pushed->digest.str()).ok());
  ASSERT_TRUE(registry_->DeleteManifest("repo", pushed->digest.str()).ok());
  EXPECT_EQ(registry_->GetManifest("repo", pushed->digest.str()).status().code(),
            StatusCode::kNotFound);
}

TEST_F(RegistryTest, RefusesManifestsThatDoNotHold) {
  Push("repo", "config");
  Push("repo", "layer");
  const auto code = [&](std::string_view reference, std::string_view content_type,
                        const std::string& bytes) {
    return registry_->PutManifest("repo", reference, content_type, bytes).status().code();
  };
  EXPECT_EQ(code("v1", media_type::kOciManifest, Manifest("config", "missing layer")),
            StatusCode::kNotFound);
  EXPECT_EQ(code("v1", media_type::kOciManifest, Manifest("config", "layer", "", 6)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code("v1", media_type::kOciIndex, Manifest("config", "layer")),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Sha256Of("other").str(), media_type::kOciManifest, Manifest("config", "layer")),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code("v1", media_type::kOciManifest, std::string(5000, ' ')),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(code("../v1", media_type::kOciManifest, Manifest("config", "layer")),
            StatusCode::kInvalidArgument);
  // The blob is in another repository only: not visible here.
  Push("other", "foreign");
  EXPECT_EQ(code("v1", media_type::kOciManifest, Manifest("config", "foreign")),
            StatusCode::kNotFound);
  EXPECT_EQ(registry_->ListTags("repo", "", 10)->names.size(), 0u);
}

TEST_F(RegistryTest, AnIndexNeedsItsChildren) {
  Push("repo", "config");
  Push("repo", "layer");
  const std::string child = Manifest("config", "layer");
  const std::string index =
      R"({"schemaVersion":2,"mediaType":")" + std::string(media_type::kOciIndex) +
      R"(","manifests":[{"mediaType":")" + std::string(media_type::kOciManifest) +
      R"(","digest":")" + Sha256Of(child).str() + R"(","size":)" + std::to_string(child.size()) +
      "}]}";
  EXPECT_EQ(registry_->PutManifest("repo", "multi", media_type::kOciIndex, index).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(
      registry_->PutManifest("repo", Sha256Of(child).str(), media_type::kOciManifest, child).ok());
  EXPECT_TRUE(registry_->PutManifest("repo", "multi", media_type::kOciIndex, index).ok());
}

TEST_F(RegistryTest, ListsReferrersFilteredByArtifactType) {
  Push("repo", "config");
  Push("repo", "layer");
  const std::string subject = Manifest("config", "layer");
  const Digest subject_digest = Sha256Of(subject);
  const std::string subject_field =
      R"(,"subject":{"mediaType":")" + std::string(media_type::kOciManifest) + R"(","digest":")" +
      subject_digest.str() + R"(","size":)" + std::to_string(subject.size()) + "}";
  // Referrers may arrive before their subject.
  auto signature = registry_->PutManifest(
      "repo", "sig", media_type::kOciManifest,
      Manifest("config", "layer", R"(,"artifactType":"application/x.sig")" + subject_field));
  ASSERT_TRUE(signature.ok()) << signature.status().message();
  EXPECT_EQ(signature->subject, subject_digest);
  ASSERT_TRUE(registry_
                  ->PutManifest("repo", "sbom", media_type::kOciManifest,
                                Manifest("config", "layer",
                                         R"(,"artifactType":"application/x.sbom")" + subject_field))
                  .ok());
  EXPECT_EQ(registry_->Referrers("repo", subject_digest, "")->size(), 2u);
  auto signatures = registry_->Referrers("repo", subject_digest, "application/x.sig");
  ASSERT_EQ(signatures->size(), 1u);
  EXPECT_EQ(signatures->front().digest, signature->digest);
  EXPECT_TRUE(registry_->Referrers("repo", Sha256Of("unknown"), "")->empty());
}

TEST_F(RegistryTest, RefusesPathTricksInNames) {
  for (const char* name : {"../etc", "a/../b", "..", "A", "a//b", "%2e%2e", "a/"}) {
    EXPECT_EQ(registry_->StartUpload(name).status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(registry_->GetManifest(name, "v1").status().code(), StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_EQ(registry_->GetManifest("repo", "..").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->GetManifest("repo", "sha256:../x").status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, PagesTags) {
  Push("repo", "config");
  Push("repo", "layer");
  const std::string manifest = Manifest("config", "layer");
  for (const char* tag : {"c", "a", "b"}) {
    ASSERT_TRUE(registry_->PutManifest("repo", tag, media_type::kOciManifest, manifest).ok());
  }
  auto first = registry_->ListTags("repo", "", 2);
  EXPECT_EQ(first->names, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(first->more);
  auto second = registry_->ListTags("repo", "b", 2);
  EXPECT_EQ(second->names, std::vector<std::string>{"c"});
  EXPECT_FALSE(second->more);
  EXPECT_EQ(registry_->ListTags("unknown", "", 2).status().code(), StatusCode::kNotFound);
}

TEST_F(RegistryTest, GarbageCollectionKeepsWhatManifestsNeed) {
  const Digest config = Push("repo", "config");
  const Digest layer = Push("repo", "layer");
  const Digest orphan = Push("repo", "orphan");
  const std::string manifest = Manifest("config", "layer");
  ASSERT_TRUE(registry_->PutManifest("repo", "v1", media_type::kOciManifest, manifest).ok());
  auto pending = registry_->StartUpload("repo");
  ASSERT_TRUE(pending.ok());

  // Within the grace period nothing goes.
  auto young =
      registry_->CollectGarbage(GcOptions{.dry_run = false, .grace = std::chrono::hours(1)});
  ASSERT_TRUE(young.ok());
  EXPECT_TRUE(young->removed.empty());
  EXPECT_EQ(young->removed_uploads, 0u);

  auto dry =
      registry_->CollectGarbage(GcOptions{.dry_run = true, .grace = std::chrono::seconds(-1)});
  ASSERT_TRUE(dry.ok());
  ASSERT_EQ(dry->removed.size(), 1u);
  EXPECT_TRUE(registry_->StatBlob("repo", orphan).ok());

  auto collected =
      registry_->CollectGarbage(GcOptions{.dry_run = false, .grace = std::chrono::seconds(-1)});
  ASSERT_TRUE(collected.ok());
  ASSERT_EQ(collected->removed.size(), 1u);
  EXPECT_EQ(collected->removed.front().digest, orphan);
  EXPECT_EQ(collected->removed_bytes, 6u);
  EXPECT_EQ(collected->removed_uploads, 1u);
  EXPECT_EQ(registry_->StatBlob("repo", orphan).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(registry_->StatBlob("repo", config).ok());
  EXPECT_TRUE(registry_->StatBlob("repo", layer).ok());
  EXPECT_EQ(registry_->GetManifest("repo", "v1")->bytes, manifest);
  EXPECT_EQ(registry_->UploadSize("repo", *pending).status().code(), StatusCode::kNotFound);

  // Once the manifest is gone, its blobs are garbage too.
  ASSERT_TRUE(registry_->DeleteManifest("repo", Sha256Of(manifest).str()).ok());
  auto after =
      registry_->CollectGarbage(GcOptions{.dry_run = false, .grace = std::chrono::seconds(-1)});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->removed.size(), 3u);  // config, layer and the manifest's own bytes
  EXPECT_EQ(registry_->StatBlob("repo", config).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace perch
