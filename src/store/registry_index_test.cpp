#include "store/registry_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "core/clock.h"
#include "core/sqlite.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class RegistryIndexTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(testing::TempDir()) /
           ("registry_index_test_" +
            std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto index = RegistryIndex::Open({.file = dir_ / "registry.db", .clock = clock_.AsWallClock()});
    ASSERT_TRUE(index.ok()) << index.status().message();
    index_ = std::move(index).value();
  }

  ManifestRecord Manifest(const std::string& content, std::optional<Digest> subject = {}) {
    return ManifestRecord{.digest = Sha256Of(content),
                          .media_type = "application/vnd.oci.image.manifest.v1+json",
                          .artifact_type = "application/x." + content,
                          .subject = std::move(subject),
                          .size = content.size(),
                          .annotations = "",
                          .references = {Sha256Of(content + "-config")}};
  }

  ManualClock clock_;
  fs::path dir_;
  std::unique_ptr<RegistryIndex> index_;
};

TEST_F(RegistryIndexTest, LinksBlobsPerRepository) {
  const Digest blob = Sha256Of("blob");
  ASSERT_TRUE(index_->LinkBlob("a/model", blob, 4).ok());
  EXPECT_EQ(*index_->LinkedBlobSize("a/model", blob), 4u);
  EXPECT_EQ(index_->LinkedBlobSize("b", blob).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(index_->HasRepository("a/model"));
  ASSERT_TRUE(index_->UnlinkBlob("a/model", blob).ok());
  EXPECT_EQ(index_->UnlinkBlob("a/model", blob).code(), StatusCode::kNotFound);
  ASSERT_TRUE(index_->LinkBlob("a", blob, 4).ok());
  ASSERT_TRUE(index_->LinkBlob("b", blob, 4).ok());
  ASSERT_TRUE(index_->UnlinkBlobEverywhere(blob).ok());
  EXPECT_EQ(index_->LinkedBlobSize("b", blob).status().code(), StatusCode::kNotFound);
}

TEST_F(RegistryIndexTest, StoresManifestsTagsAndDeletesThemTogether) {
  const ManifestRecord one = Manifest("one");
  ASSERT_TRUE(index_->PutManifest("repo", one, "v1").ok());
  ASSERT_TRUE(index_->PutManifest("repo", one, "latest").ok());
  EXPECT_EQ(*index_->ResolveTag("repo", "v1"), one.digest);
  auto stored = index_->GetManifest("repo", one.digest);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->artifact_type, "application/x.one");
  EXPECT_EQ(stored->size, 3u);
  ASSERT_TRUE(index_->DeleteTag("repo", "v1").ok());
  EXPECT_EQ(index_->ResolveTag("repo", "v1").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(index_->DeleteManifest("repo", one.digest).ok());
  EXPECT_EQ(index_->ResolveTag("repo", "latest").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(index_->GetManifest("repo", one.digest).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(index_->DeleteManifest("repo", one.digest).code(), StatusCode::kNotFound);
}

TEST_F(RegistryIndexTest, PagesTagsAndRepositoriesInByteOrder) {
  for (const char* tag : {"b", "a", "C", "c"}) {
    ASSERT_TRUE(index_->PutManifest("repo", Manifest(tag), tag).ok());
  }
  EXPECT_EQ(*index_->ListTags("repo", "", 2), (std::vector<std::string>{"C", "a"}));
  EXPECT_EQ(*index_->ListTags("repo", "a", 10), (std::vector<std::string>{"b", "c"}));
  ASSERT_TRUE(index_->LinkBlob("other", Sha256Of("x"), 1).ok());
  EXPECT_EQ(*index_->ListRepositories("", 10), (std::vector<std::string>{"other", "repo"}));
  EXPECT_EQ(*index_->ListRepositories("other", 10), (std::vector<std::string>{"repo"}));
}

TEST_F(RegistryIndexTest, FindsReferrersOfASubject) {
  const ManifestRecord subject = Manifest("subject");
  ASSERT_TRUE(index_->PutManifest("repo", subject, "v1").ok());
  ASSERT_TRUE(index_->PutManifest("repo", Manifest("sig", subject.digest), "").ok());
  ASSERT_TRUE(index_->PutManifest("repo", Manifest("sbom", subject.digest), "").ok());
  ASSERT_TRUE(index_->PutManifest("elsewhere", Manifest("x", subject.digest), "").ok());
  auto referrers = index_->Referrers("repo", subject.digest);
  ASSERT_TRUE(referrers.ok());
  ASSERT_EQ(referrers->size(), 2u);
  EXPECT_EQ(referrers->at(0).subject, subject.digest);
  EXPECT_TRUE(index_->Referrers("repo", Sha256Of("none"))->empty());
}

TEST_F(RegistryIndexTest, ListsReferrersOldestFirstByItsClock) {
  const ManifestRecord subject = Manifest("subject");
  ManifestRecord first = Manifest("first", subject.digest);
  ManifestRecord second = Manifest("second", subject.digest);
  // Pushed in the same millisecond, referrers come in digest order; make the
  // later push the one with the smaller digest, so only the clock orders them.
  if (first.digest.str() < second.digest.str()) {
    std::swap(first, second);
  }
  ASSERT_TRUE(index_->PutManifest("repo", first, "").ok());
  clock_.Advance(std::chrono::milliseconds(1));
  ASSERT_TRUE(index_->PutManifest("repo", second, "").ok());
  auto referrers = index_->Referrers("repo", subject.digest);
  ASSERT_TRUE(referrers.ok());
  ASSERT_EQ(referrers->size(), 2u);
  EXPECT_EQ(referrers->at(0).digest, first.digest);
  EXPECT_EQ(referrers->at(1).digest, second.digest);
}

TEST_F(RegistryIndexTest, AFailedPutLeavesNothingBehind) {
  const ManifestRecord manifest = Manifest("m");
  // A trigger refuses the tag, written after the manifest in the same
  // transaction.
  auto other = SqliteDb::Open({.path = dir_ / "registry.db"});
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)
                  ->Exec("CREATE TRIGGER refuse_tags BEFORE INSERT ON tags "
                         "BEGIN SELECT RAISE(ABORT, 'tags refused'); END",
                         "add a trigger")
                  .ok());
  const Status put = index_->PutManifest("repo", manifest, "v1");
  EXPECT_FALSE(put.ok());
  EXPECT_NE(put.message().find("registry.db"), std::string::npos) << put.message();
  ASSERT_TRUE((*other)->Exec("DROP TRIGGER refuse_tags", "drop the trigger").ok());
  // The manifest row written before the tag failed was rolled back with it.
  EXPECT_EQ(index_->GetManifest("repo", manifest.digest).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(index_->HasRepository("repo"));
}

TEST_F(RegistryIndexTest, MarksEveryDigestAManifestNeeds) {
  const ManifestRecord subject = Manifest("subject");
  const ManifestRecord referrer = Manifest("sig", subject.digest);
  ASSERT_TRUE(index_->PutManifest("repo", referrer, "").ok());
  auto live = index_->LiveDigests();
  ASSERT_TRUE(live.ok());
  for (const Digest& needed : {referrer.digest, referrer.references[0], subject.digest}) {
    EXPECT_NE(std::find(live->begin(), live->end(), needed), live->end()) << needed.str();
  }
  EXPECT_EQ(live->size(), 3u);
}

TEST_F(RegistryIndexTest, TracksUploadsAcrossReopening) {
  ASSERT_TRUE(index_->AddUpload("abc", "repo").ok());
  index_.reset();
  auto reopened = RegistryIndex::Open({.file = dir_ / "registry.db"});
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->UploadRepository("abc"), "repo");
  EXPECT_EQ((*reopened)->ListUploads()->size(), 1u);
  ASSERT_TRUE((*reopened)->RemoveUpload("abc").ok());
  EXPECT_EQ((*reopened)->UploadRepository("abc").status().code(), StatusCode::kNotFound);
}

TEST_F(RegistryIndexTest, RefusesAFileThatIsNotAnIndex) {
  const fs::path garbage = dir_ / "garbage.db";
  {
    std::ofstream out(garbage);
    out << "this is not a database, and it is long enough to have a header............";
  }
  const auto refused = RegistryIndex::Open({.file = garbage});
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("garbage.db"), std::string::npos);
}

}  // namespace
}  // namespace perch
