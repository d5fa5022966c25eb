#include "store/blob_store.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>

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

// Bytes that no two chunks share, so a chunk hashed twice, dropped or out of
// order changes the digest.
std::string RandomBytes(size_t size) {
  std::mt19937_64 random(7);
  std::string bytes(size, '\0');
  for (char& byte : bytes) {
    byte = static_cast<char>(random() & 0xff);
  }
  return bytes;
}

std::string FileText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Pieces of sizes that straddle the 1 MiB chunks every way: more chunks than
// the hashing thread holds at once, so the writer also waits for it.
void AppendInUnevenPieces(BlobWriter& writer, std::string_view bytes) {
  const size_t sizes[] = {1, 4093, 300'000, (size_t{1} << 20) + 1, 65'536, 2'000'000};
  for (size_t i = 0; !bytes.empty(); ++i) {
    const size_t size = std::min(bytes.size(), sizes[i % std::size(sizes)]);
    ASSERT_TRUE(writer.Append(bytes.substr(0, size)).ok());
    bytes.remove_prefix(size);
  }
}

TEST_F(BlobStoreTest, AManyChunkBlobHashesAsInOnePiece) {
  const std::string bytes = RandomBytes((size_t{11} << 20) / 2 + 7);
  auto writer = store_->OpenWriter("", false);
  ASSERT_TRUE(writer.ok());
  AppendInUnevenPieces(**writer, bytes);
  EXPECT_EQ((*writer)->size(), bytes.size());
  const Digest expected = Sha256Of(bytes);
  auto committed = (*writer)->Commit(expected, bytes.size());
  ASSERT_TRUE(committed.ok()) << committed.status().message();
  EXPECT_EQ(*committed, expected);
  EXPECT_EQ(FileText(store_->PathOf(expected)), bytes);
  EXPECT_EQ(FilesWriting(), 0u);
}

TEST_F(BlobStoreTest, AManyChunkBlobThatDoesNotMatchLeavesNothing) {
  std::string bytes = RandomBytes(size_t{3} << 20);
  auto writer = store_->OpenWriter("", false);
  AppendInUnevenPieces(**writer, bytes);
  const Digest claimed = Sha256Of(bytes);
  bytes[(size_t{3} << 20) / 2] ^= 1;
  auto other = store_->OpenWriter("", false);
  AppendInUnevenPieces(**other, bytes);
  const auto refused = (*other)->Commit(claimed);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("digest mismatch"), std::string::npos);
  EXPECT_FALSE(store_->Has(claimed));
  {
    auto abandoned = std::move(writer).value();  // destroyed mid-blob, its thread busy
  }
  EXPECT_EQ(FilesWriting(), 0u);
}

TEST_F(BlobStoreTest, ResumesAManyChunkWriteKeptMidChunk) {
  const std::string bytes = RandomBytes((size_t{5} << 20) + 12'345);
  const size_t kept = (size_t{5} << 20) / 2 + 3;
  {
    auto writer = store_->OpenWriter("partial-2", false);
    AppendInUnevenPieces(**writer, std::string_view(bytes).substr(0, kept));
    (*writer)->Keep();
  }
  EXPECT_EQ(store_->WrittenSize("partial-2"), kept);
  auto writer = store_->OpenWriter("partial-2", true);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ((*writer)->size(), kept);
  AppendInUnevenPieces(**writer, std::string_view(bytes).substr(kept));
  auto committed = (*writer)->Commit(Sha256Of(bytes), bytes.size());
  ASSERT_TRUE(committed.ok()) << committed.status().message();
  EXPECT_EQ(FileText(store_->PathOf(*committed)), bytes);
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
