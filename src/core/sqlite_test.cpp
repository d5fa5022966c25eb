#include "core/sqlite.h"

#include <gtest/gtest.h>

#include <fstream>

namespace perch {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS items(name TEXT PRIMARY KEY, count INTEGER NOT NULL, data BLOB);";

class SqliteTest : public testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::path(testing::TempDir()) /
              (std::string("perch_sqlite_") +
               testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(folder_);
  }
  void TearDown() override { fs::remove_all(folder_); }

  SqliteOptions Options() const {
    return SqliteOptions{.path = folder_ / "sub" / "test.db", .schema = kSchema};
  }

  std::unique_ptr<SqliteDb> Open(const SqliteOptions& options) {
    auto db = SqliteDb::Open(options);
    EXPECT_TRUE(db.ok()) << db.status().message();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  static Status Insert(SqliteDb& db, std::string_view name, int64_t count) {
    PERCH_ASSIGN_OR_RETURN(SqliteStatement insert,
                           db.Prepare("INSERT INTO items(name, count) VALUES (?, ?)"));
    return insert.Bind(1, name).Bind(2, count).Run("insert an item");
  }

  static int64_t Count(SqliteDb& db) {
    auto select = db.Prepare("SELECT COUNT(*) FROM items");
    EXPECT_TRUE(select.ok());
    EXPECT_TRUE(select->Step());
    const int64_t count = select->Int(0);
    EXPECT_TRUE(select->Finish("count").ok());
    return count;
  }

  fs::path folder_;
};

TEST_F(SqliteTest, BindsAndReadsTextIntegersBlobsAndNull) {
  auto db = Open(Options());
  ASSERT_NE(db, nullptr);
  const std::string bytes("a\0b\xff", 4);
  auto insert = db->Prepare("INSERT INTO items(name, count, data) VALUES (?, ?, ?)");
  ASSERT_TRUE(insert.ok()) << insert.status().message();
  ASSERT_TRUE(insert->Bind(1, "blob").Bind(2, int64_t{-7}).BindBlob(3, bytes).Run("insert").ok());
  ASSERT_TRUE(insert->Bind(1, "empty").Bind(2, int64_t{0}).BindBlob(3, "").Run("insert").ok());
  ASSERT_TRUE(insert->Bind(1, "").Bind(2, int64_t{1} << 40).BindNull(3).Run("insert").ok());
  EXPECT_EQ(db->Changes(), 1);

  auto select = db->Prepare("SELECT name, count, data FROM items ORDER BY name");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(select->Step());
  EXPECT_EQ(select->Text(0), "");
  EXPECT_EQ(select->Int(1), int64_t{1} << 40);
  EXPECT_TRUE(select->IsNull(2));
  ASSERT_TRUE(select->Step());
  EXPECT_EQ(select->Text(0), "blob");
  EXPECT_EQ(select->Int(1), -7);
  EXPECT_EQ(select->Blob(2), bytes);
  ASSERT_TRUE(select->Step());
  EXPECT_EQ(select->Text(0), "empty");
  EXPECT_FALSE(select->IsNull(2));  // an empty blob is not NULL
  EXPECT_EQ(select->Blob(2), "");
  EXPECT_FALSE(select->Step());
  EXPECT_TRUE(select->Finish("read items").ok());
}

TEST_F(SqliteTest, StatementsAreKeptAndReusedAndResetWhenReleased) {
  auto db = Open(Options());
  ASSERT_NE(db, nullptr);
  for (const char* name : {"a", "b", "c"}) {
    ASSERT_TRUE(Insert(*db, name, 1).ok());
  }
  constexpr std::string_view kSelect = "SELECT name FROM items ORDER BY name";
  {
    // Left after one row, as an early return would.
    auto first = db->Prepare(kSelect);
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE(first->Step());
    EXPECT_EQ(first->Text(0), "a");
    // The same SQL while the first handle is alive: a statement of its own.
    auto nested = db->Prepare(kSelect);
    ASSERT_TRUE(nested.ok());
    ASSERT_TRUE(nested->Step());
    EXPECT_EQ(nested->Text(0), "a");
    ASSERT_TRUE(first->Step());
    EXPECT_EQ(first->Text(0), "b");
  }
  // Released mid-way, the kept statement starts again from the first row.
  auto again = db->Prepare(kSelect);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(again->Step());
  EXPECT_EQ(again->Text(0), "a");
}

TEST_F(SqliteTest, ACommittedTransactionStaysAndAnAbandonedOneRollsBack) {
  auto db = Open(Options());
  ASSERT_NE(db, nullptr);
  {
    auto transaction = db->Begin();
    ASSERT_TRUE(transaction.ok()) << transaction.status().message();
    ASSERT_TRUE(Insert(*db, "kept", 1).ok());
    ASSERT_TRUE(transaction->Commit().ok());
  }
  {
    auto transaction = db->Begin();
    ASSERT_TRUE(transaction.ok());
    ASSERT_TRUE(Insert(*db, "abandoned", 1).ok());
  }
  EXPECT_EQ(Count(*db), 1);
  // Nothing is left open: another transaction can begin.
  auto next = db->Begin();
  ASSERT_TRUE(next.ok()) << next.status().message();
  EXPECT_TRUE(next->Commit().ok());
}

// The power-loss side is src/outbox/durable_queue_faults_test.cpp; here:
// the switch takes effect and the log can be flushed before and after writes.
TEST_F(SqliteTest, CommitsCanSkipTheFlushAndTheLogBeFlushedLater) {
  SqliteOptions options = Options();
  options.full_sync = true;
  auto db = Open(options);
  ASSERT_NE(db, nullptr);
  EXPECT_TRUE(db->SyncWal().ok());
  ASSERT_TRUE(db->SetFullSync(false).ok());
  auto synchronous = db->Prepare("PRAGMA synchronous");
  ASSERT_TRUE(synchronous.ok() && synchronous->Step());
  EXPECT_EQ(synchronous->Int(0), 1) << "NORMAL";
  ASSERT_TRUE(synchronous->Finish("read the pragma").ok());
  ASSERT_TRUE(Insert(*db, "unflushed", 1).ok());
  EXPECT_TRUE(db->SyncWal().ok());
  ASSERT_TRUE(db->SetFullSync(true).ok());
  ASSERT_TRUE(synchronous->Step());
  EXPECT_EQ(synchronous->Int(0), 2) << "FULL";
  ASSERT_TRUE(synchronous->Finish("read the pragma").ok());
  EXPECT_EQ(Count(*db), 1);
}

TEST_F(SqliteTest, AConstraintFailureInsideATransactionRollsItAllBack) {
  auto db = Open(Options());
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(Insert(*db, "taken", 1).ok());
  const auto add_two = [&]() -> Status {
    PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, db->Begin());
    PERCH_RETURN_IF_ERROR(Insert(*db, "new", 2));
    PERCH_RETURN_IF_ERROR(Insert(*db, "taken", 2));
    return transaction.Commit();
  };
  const Status failed = add_two();
  EXPECT_EQ(failed.code(), StatusCode::kAlreadyExists) << failed.message();
  EXPECT_NE(failed.message().find("test.db"), std::string::npos) << failed.message();
  EXPECT_NE(failed.message().find("insert an item"), std::string::npos) << failed.message();
  EXPECT_EQ(Count(*db), 1);

  // A NOT NULL violation is a bug in the caller, not a duplicate.
  auto insert = db->Prepare("INSERT INTO items(name, count) VALUES (?, NULL)");
  ASSERT_TRUE(insert.ok());
  EXPECT_EQ(insert->Bind(1, "x").Run("insert").code(), StatusCode::kInternal);
}

TEST_F(SqliteTest, ABindOutOfRangeIsReportedByFinish) {
  auto db = Open(Options());
  ASSERT_NE(db, nullptr);
  auto insert = db->Prepare("INSERT INTO items(name, count) VALUES (?, ?)");
  ASSERT_TRUE(insert.ok());
  const Status status = insert->Bind(1, "x").Bind(2, int64_t{1}).Bind(3, "extra").Run("insert");
  EXPECT_EQ(status.code(), StatusCode::kInternal);
  EXPECT_NE(status.message().find("range"), std::string::npos) << status.message();
  EXPECT_EQ(Count(*db), 0);
  // The error does not stick to the kept statement.
  EXPECT_TRUE(insert->Bind(1, "x").Bind(2, int64_t{1}).Run("insert").ok());
}

TEST_F(SqliteTest, StaysReadableAcrossReopen) {
  {
    auto db = Open(Options());
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(Insert(*db, "a", 1).ok());
  }
  auto db = Open(Options());
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Count(*db), 1);
}

TEST_F(SqliteTest, RefusesAFileThatIsNotADatabase) {
  fs::create_directories(folder_);
  const fs::path text = folder_ / "notes.db";
  std::ofstream(text) << "these are notes, not an SQLite database, and long enough to tell";
  SqliteOptions options = Options();
  options.path = text;
  const auto db = SqliteDb::Open(options);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(db.status().message().find("notes.db"), std::string::npos) << db.status().message();
}

TEST_F(SqliteTest, RefusesAnUnwritableLocation) {
  fs::create_directories(folder_);
  std::ofstream(folder_ / "plain-file") << "x";
  SqliteOptions options = Options();
  // Below a regular file: no folder can be made there, whoever runs the test.
  options.path = folder_ / "plain-file" / "test.db";
  auto below_file = SqliteDb::Open(options);
  ASSERT_FALSE(below_file.ok());
  EXPECT_EQ(below_file.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(below_file.status().message().find("plain-file"), std::string::npos)
      << below_file.status().message();
  // A folder where the file should be.
  options.path = folder_;
  auto folder = SqliteDb::Open(options);
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(folder.status().message().find(folder_.string()), std::string::npos)
      << folder.status().message();
}

TEST_F(SqliteTest, RefusesAnotherProgramsTablesOfTheSameName) {
  SqliteOptions options = Options();
  options.schema = "CREATE TABLE items(id INTEGER PRIMARY KEY, label TEXT);";
  ASSERT_NE(Open(options), nullptr);
  auto db = Open(Options());  // CREATE TABLE IF NOT EXISTS keeps the other table
  ASSERT_NE(db, nullptr);
  const auto insert = db->Prepare("INSERT INTO items(name, count) VALUES (?, ?)");
  ASSERT_FALSE(insert.ok());
  EXPECT_EQ(insert.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(insert.status().message().find("test.db"), std::string::npos);
}

TEST_F(SqliteTest, AWriterStillBusyAfterTheTimeoutIsUnavailable) {
  SqliteOptions options = Options();
  options.busy_timeout = std::chrono::milliseconds(50);
  auto holder = Open(options);
  auto waiter = Open(options);
  ASSERT_NE(holder, nullptr);
  ASSERT_NE(waiter, nullptr);
  {
    auto held = holder->Begin();
    ASSERT_TRUE(held.ok());
    const auto blocked = waiter->Begin();
    ASSERT_FALSE(blocked.ok());
    EXPECT_EQ(blocked.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(blocked.status().message().find("locked"), std::string::npos)
        << blocked.status().message();
    EXPECT_EQ(Insert(*waiter, "a", 1).code(), StatusCode::kUnavailable);
    ASSERT_TRUE(held->Commit().ok());
  }
  EXPECT_TRUE(Insert(*waiter, "a", 1).ok());
}

TEST_F(SqliteTest, AFullDiskIsResourceExhausted) {
  auto db = Open(Options());
  ASSERT_NE(db, nullptr);
  // A database capped at its current size stands in for a full disk.
  ASSERT_TRUE(db->Exec("PRAGMA max_page_count=1", "cap the database").ok());
  auto insert = db->Prepare("INSERT INTO items(name, count, data) VALUES (?, ?, ?)");
  ASSERT_TRUE(insert.ok());
  const Status status =
      insert->Bind(1, "big").Bind(2, int64_t{1}).BindBlob(3, std::string(1 << 16, 'x')).Run("add");
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status.message();
  EXPECT_NE(status.message().find("full"), std::string::npos);
}

}  // namespace
}  // namespace perch
