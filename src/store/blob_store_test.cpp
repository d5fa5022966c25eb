#include "store/blob_store.h"

#include <gtest/gtest.h>

#include <fstream>

namespace perch {
namespace {

namespace fs = std::filesystem;

class BlobStoreTest : public testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(testing::TempDir()) /
            ("blob_store_test_" +
             std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    auto store = BlobStore::Open(root_);
    ASSERT_TRUE(store.ok()) << store.status().message();
    store_ = std::move(store).value();
  }

  size_t FilesWriting() const {
    return static_cast<size_t>(
        std::distance(fs::directory_iterator(root_ / "writing"), fs::directory_iterator()));
  }

  fs::path root_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, CommitsVerifiedBlobsUnderTheirDigest) {
  auto writer = store_->OpenWriter("", false);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append("hello ").ok());
  ASSERT_TRUE((*writer)->Append("world").ok());
  const Digest expected = Sha256Of("hello world");
  auto committed = (*writer)->Commit(expected, 11);
  ASSERT_TRUE(committed.ok()) << committed.status().message();
  EXPECT_TRUE(store_->Has(expected));
  EXPECT_EQ(*store_->Size(expected), 11u);
  EXPECT_EQ(*store_->Read(expected, 100), "hello world");
  EXPECT_EQ(store_->Read(expected, 5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(FilesWriting(), 0u);
}

TEST_F(BlobStoreTest, RefusesAndRemovesBlobsThatDoNotMatch) {
  auto writer = store_->OpenWriter("", false);
  ASSERT_TRUE((*writer)->Append("tampered").ok());
  const auto wrong_digest = (*writer)->Commit(Sha256Of("original"));
  ASSERT_FALSE(wrong_digest.ok());
  EXPECT_NE(wrong_digest.status().message().find("digest mismatch"), std::string::npos);
  EXPECT_FALSE(store_->Has(Sha256Of("tampered")));

  writer = store_->OpenWriter("", false);
  ASSERT_TRUE((*writer)->Append("short").ok());
  const auto wrong_size = (*writer)->Commit(Sha256Of("short"), 6);
  ASSERT_FALSE(wrong_size.ok());
  EXPECT_NE(wrong_size.status().message().find("size mismatch"), std::string::npos);
  EXPECT_FALSE(store_->Has(Sha256Of("short")));
  EXPECT_EQ(FilesWriting(), 0u);
}

TEST_F(BlobStoreTest, ResumesAKeptWrite) {
  {
    auto writer = store_->OpenWriter("partial-1", false);
    ASSERT_TRUE((*writer)->Append("first half,").ok());
    (*writer)->Keep();
  }
  EXPECT_EQ(store_->WrittenSize("partial-1"), 11u);
  auto writer = store_->OpenWriter("partial-1", true);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ((*writer)->size(), 11u);
  ASSERT_TRUE((*writer)->Append(" second half").ok());
  auto committed = (*writer)->Commit(Sha256Of("first half, second half"));
  ASSERT_TRUE(committed.ok()) << committed.status().message();
  EXPECT_EQ(store_->WrittenSize("partial-1"), 0u);
}

TEST_F(BlobStoreTest, AnAbandonedWriteLeavesNothing) {
  {
    auto writer = store_->OpenWriter("", false);
    ASSERT_TRUE((*writer)->Append("bytes").ok());
  }
  EXPECT_EQ(FilesWriting(), 0u);
  auto listed = store_->List();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

TEST_F(BlobStoreTest, RefusesWriterNamesThatCouldEscape) {
  for (const char* bad : {"../x", "a/b", ".", "..", "a b"}) {
    EXPECT_EQ(store_->OpenWriter(bad, false).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(BlobStoreTest, ListsAndRemovesBlobs) {
  auto a = store_->Put("a");
  auto b = store_->Put("b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(store_->List()->size(), 2u);
  ASSERT_TRUE(store_->Remove(*a).ok());
  ASSERT_TRUE(store_->Remove(*a).ok());
  const auto listed = store_->List();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().digest, *b);
}

}  // namespace
}  // namespace perch
