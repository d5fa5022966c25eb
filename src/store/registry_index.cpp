#include "store/registry_index.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <chrono>
#include <mutex>

namespace perch {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS repositories(name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_links(
  repository TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY(repository, digest)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_links_by_digest ON blob_links(digest);
CREATE TABLE IF NOT EXISTS manifests(
  repository TEXT NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,
  artifact_type TEXT NOT NULL, subject TEXT, size INTEGER NOT NULL,
  annotations TEXT NOT NULL, created_ms INTEGER NOT NULL,
  PRIMARY KEY(repository, digest)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifests_by_subject ON manifests(repository, subject);
CREATE TABLE IF NOT EXISTS manifest_references(
  repository TEXT NOT NULL, manifest TEXT NOT NULL, digest TEXT NOT NULL,
  PRIMARY KEY(repository, manifest, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags(
  repository TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
  PRIMARY KEY(repository, tag)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags(repository, digest);
CREATE TABLE IF NOT EXISTS uploads(
  id TEXT PRIMARY KEY, repository TEXT NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;
)sql";

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A statement prepared for one call and finalised after it.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    prepared_ = sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr);
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& Bind(int index, std::string_view text) {
    sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int index, int64_t value) {
    sqlite3_bind_int64(statement_, index, value);
    return *this;
  }
  Statement& BindNull(int index) {
    sqlite3_bind_null(statement_, index);
    return *this;
  }

  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return prepared_ == SQLITE_OK ? sqlite3_step(statement_) : prepared_; }
  // Runs to completion; Unavailable naming `what` on an error.
  Status Run(std::string_view what) {
    int result = SQLITE_ROW;
    while (result == SQLITE_ROW) {
      result = Step();
    }
    return Check(result, what);
  }
  Status Check(int result, std::string_view what) const {
    if (result == SQLITE_OK || result == SQLITE_DONE || result == SQLITE_ROW) {
      return Status::Ok();
    }
    return Unavailable(fmt::format("registry index: cannot {}: {}", what, sqlite3_errmsg(db_)));
  }

  std::string Text(int column) const {
    const auto* text = sqlite3_column_text(statement_, column);
    return text ? std::string(reinterpret_cast<const char*>(text),
                              static_cast<size_t>(sqlite3_column_bytes(statement_, column)))
                : std::string();
  }
  int64_t Int(int column) const { return sqlite3_column_int64(statement_, column); }
  bool IsNull(int column) const { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }

 private:
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
  int prepared_ = SQLITE_ERROR;
};

// Digests read back from the index were validated when written; a row that
// no longer parses means the file was edited by hand.
Result<Digest> StoredDigest(const std::string& text) {
  auto digest = Digest::Parse(text);
  if (!digest.ok()) {
    return Internal("registry index holds an invalid digest '" + text + "'");
  }
  return digest;
}

}  // namespace

class RegistryIndex::Impl {
 public:
  explicit Impl(sqlite3* db) : db_(db) {}
  ~Impl() { sqlite3_close_v2(db_); }

  Status Exec(const char* sql, std::string_view what) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
      std::string message = error ? error : "unknown error";
      sqlite3_free(error);
      return Unavailable(fmt::format("registry index: cannot {}: {}", what, message));
    }
    return Status::Ok();
  }

  // Runs `body` in a transaction, committed only when it returns Ok.
  template <typename Body>
  Status Transaction(std::string_view what, Body body) {
    PERCH_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", what));
    Status status = body();
    if (status.ok()) {
      status = Exec("COMMIT", what);
    }
    if (!status.ok()) {
      (void)Exec("ROLLBACK", what);
    }
    return status;
  }

  Status EnsureRepository(std::string_view repository) {
    Statement insert(db_, "INSERT OR IGNORE INTO repositories(name) VALUES (?)");
    return insert.Bind(1, repository).Run("record a repository");
  }

  Result<std::vector<std::string>> Strings(Statement& select, std::string_view what) {
    std::vector<std::string> names;
    int result = 0;
    while ((result = select.Step()) == SQLITE_ROW) {
      names.push_back(select.Text(0));
    }
    PERCH_RETURN_IF_ERROR(select.Check(result, what));
    return names;
  }

  Result<ManifestRecord> ReadManifest(Statement& select) {
    PERCH_ASSIGN_OR_RETURN(Digest digest, StoredDigest(select.Text(0)));
    ManifestRecord record{.digest = std::move(digest),
                          .media_type = select.Text(1),
                          .artifact_type = select.Text(2),
                          .subject = std::nullopt,
                          .size = static_cast<uint64_t>(select.Int(4)),
                          .annotations = select.Text(5),
                          .references = {}};
    if (!select.IsNull(3)) {
      PERCH_ASSIGN_OR_RETURN(record.subject, StoredDigest(select.Text(3)));
    }
    return record;
  }

  std::mutex mutex;
  sqlite3* db_;
};

Result<std::unique_ptr<RegistryIndex>> RegistryIndex::Open(const std::filesystem::path& file) {
  sqlite3* db = nullptr;
  const int opened =
      sqlite3_open_v2(file.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  auto impl = std::make_unique<Impl>(db);
  if (opened != SQLITE_OK) {
    return Unavailable(fmt::format("cannot open the registry index {}: {}", file.string(),
                                   db ? sqlite3_errmsg(db) : "out of memory"));
  }
  sqlite3_busy_timeout(db, 10000);
  // FULL: a manifest the hub acknowledged survives a power loss; pushes are
  // rare enough that the extra flush does not matter.
  PERCH_RETURN_IF_ERROR(
      impl->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", "switch to WAL mode"));
  PERCH_RETURN_IF_ERROR(impl->Exec(kSchema, "create its tables (is it a registry index?)"));
  return std::unique_ptr<RegistryIndex>(new RegistryIndex(std::move(impl)));
}

RegistryIndex::RegistryIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RegistryIndex::~RegistryIndex() = default;

Status RegistryIndex::LinkBlob(std::string_view repository, const Digest& digest, uint64_t size) {
  std::lock_guard lock(impl_->mutex);
  return impl_->Transaction("link a blob", [&] {
    PERCH_RETURN_IF_ERROR(impl_->EnsureRepository(repository));
    Statement insert(
        impl_->db_, "INSERT OR REPLACE INTO blob_links(repository, digest, size) VALUES (?, ?, ?)");
    return insert.Bind(1, repository)
        .Bind(2, digest.str())
        .Bind(3, static_cast<int64_t>(size))
        .Run("link a blob");
  });
}

Result<uint64_t> RegistryIndex::LinkedBlobSize(std::string_view repository, const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_, "SELECT size FROM blob_links WHERE repository = ? AND digest = ?");
  select.Bind(1, repository).Bind(2, digest.str());
  const int result = select.Step();
  if (result == SQLITE_ROW) {
    return static_cast<uint64_t>(select.Int(0));
  }
  PERCH_RETURN_IF_ERROR(select.Check(result, "look up a blob"));
  return NotFound(fmt::format("blob {} is not in repository {}", digest.str(), repository));
}

Status RegistryIndex::UnlinkBlob(std::string_view repository, const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  Statement remove(impl_->db_, "DELETE FROM blob_links WHERE repository = ? AND digest = ?");
  PERCH_RETURN_IF_ERROR(remove.Bind(1, repository).Bind(2, digest.str()).Run("unlink a blob"));
  if (sqlite3_changes(impl_->db_) == 0) {
    return NotFound(fmt::format("blob {} is not in repository {}", digest.str(), repository));
  }
  return Status::Ok();
}

Status RegistryIndex::UnlinkBlobEverywhere(const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  Statement remove(impl_->db_, "DELETE FROM blob_links WHERE digest = ?");
  return remove.Bind(1, digest.str()).Run("unlink a collected blob");
}

Status RegistryIndex::PutManifest(std::string_view repository, const ManifestRecord& manifest,
                                  std::string_view tag) {
  std::lock_guard lock(impl_->mutex);
  return impl_->Transaction("store a manifest", [&] {
    PERCH_RETURN_IF_ERROR(impl_->EnsureRepository(repository));
    Statement insert(impl_->db_,
                     "INSERT OR REPLACE INTO manifests(repository, digest, media_type, "
                     "artifact_type, subject, size, annotations, created_ms) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    insert.Bind(1, repository)
        .Bind(2, manifest.digest.str())
        .Bind(3, manifest.media_type)
        .Bind(4, manifest.artifact_type)
        .Bind(6, static_cast<int64_t>(manifest.size))
        .Bind(7, manifest.annotations)
        .Bind(8, NowUnixMs());
    if (manifest.subject) {
      insert.Bind(5, manifest.subject->str());
    } else {
      insert.BindNull(5);
    }
    PERCH_RETURN_IF_ERROR(insert.Run("store a manifest"));
    Statement clear(impl_->db_,
                    "DELETE FROM manifest_references WHERE repository = ? AND manifest = ?");
    PERCH_RETURN_IF_ERROR(clear.Bind(1, repository)
                              .Bind(2, manifest.digest.str())
                              .Run("replace a manifest's references"));
    for (const Digest& reference : manifest.references) {
      Statement add(impl_->db_,
                    "INSERT OR IGNORE INTO manifest_references(repository, manifest, digest) "
                    "VALUES (?, ?, ?)");
      PERCH_RETURN_IF_ERROR(add.Bind(1, repository)
                                .Bind(2, manifest.digest.str())
                                .Bind(3, reference.str())
                                .Run("record a manifest's references"));
    }
    if (tag.empty()) {
      return Status::Ok();
    }
    Statement tag_it(impl_->db_,
                     "INSERT OR REPLACE INTO tags(repository, tag, digest) VALUES (?, ?, ?)");
    return tag_it.Bind(1, repository).Bind(2, tag).Bind(3, manifest.digest.str()).Run("tag");
  });
}

Result<ManifestRecord> RegistryIndex::GetManifest(std::string_view repository,
                                                  const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_,
                   "SELECT digest, media_type, artifact_type, subject, size, annotations "
                   "FROM manifests WHERE repository = ? AND digest = ?");
  select.Bind(1, repository).Bind(2, digest.str());
  const int result = select.Step();
  if (result == SQLITE_ROW) {
    return impl_->ReadManifest(select);
  }
  PERCH_RETURN_IF_ERROR(select.Check(result, "look up a manifest"));
  return NotFound(fmt::format("manifest {} is not in repository {}", digest.str(), repository));
}

Result<Digest> RegistryIndex::ResolveTag(std::string_view repository, std::string_view tag) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_, "SELECT digest FROM tags WHERE repository = ? AND tag = ?");
  select.Bind(1, repository).Bind(2, tag);
  const int result = select.Step();
  if (result == SQLITE_ROW) {
    return StoredDigest(select.Text(0));
  }
  PERCH_RETURN_IF_ERROR(select.Check(result, "look up a tag"));
  return NotFound(fmt::format("tag {} is not in repository {}", tag, repository));
}

Status RegistryIndex::DeleteManifest(std::string_view repository, const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  return impl_->Transaction("delete a manifest", [&] {
    Statement remove(impl_->db_, "DELETE FROM manifests WHERE repository = ? AND digest = ?");
    PERCH_RETURN_IF_ERROR(
        remove.Bind(1, repository).Bind(2, digest.str()).Run("delete a manifest"));
    if (sqlite3_changes(impl_->db_) == 0) {
      return NotFound(fmt::format("manifest {} is not in repository {}", digest.str(), repository));
    }
    Statement references(impl_->db_,
                         "DELETE FROM manifest_references WHERE repository = ? AND manifest = ?");
    PERCH_RETURN_IF_ERROR(
        references.Bind(1, repository).Bind(2, digest.str()).Run("delete a manifest's references"));
    Statement tags(impl_->db_, "DELETE FROM tags WHERE repository = ? AND digest = ?");
    return tags.Bind(1, repository).Bind(2, digest.str()).Run("delete a manifest's tags");
  });
}

Status RegistryIndex::DeleteTag(std::string_view repository, std::string_view tag) {
  std::lock_guard lock(impl_->mutex);
  Statement remove(impl_->db_, "DELETE FROM tags WHERE repository = ? AND tag = ?");
  PERCH_RETURN_IF_ERROR(remove.Bind(1, repository).Bind(2, tag).Run("delete a tag"));
  if (sqlite3_changes(impl_->db_) == 0) {
    return NotFound(fmt::format("tag {} is not in repository {}", tag, repository));
  }
  return Status::Ok();
}

bool RegistryIndex::HasRepository(std::string_view repository) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_, "SELECT 1 FROM repositories WHERE name = ?");
  return select.Bind(1, repository).Step() == SQLITE_ROW;
}

Result<std::vector<std::string>> RegistryIndex::ListTags(std::string_view repository,
                                                         std::string_view last, size_t limit) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_,
                   "SELECT tag FROM tags WHERE repository = ? AND tag > ? ORDER BY tag LIMIT ?");
  select.Bind(1, repository).Bind(2, last).Bind(3, static_cast<int64_t>(limit));
  return impl_->Strings(select, "list tags");
}

Result<std::vector<std::string>> RegistryIndex::ListRepositories(std::string_view last,
                                                                 size_t limit) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_,
                   "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?");
  select.Bind(1, last).Bind(2, static_cast<int64_t>(limit));
  return impl_->Strings(select, "list repositories");
}

Result<std::vector<ManifestRecord>> RegistryIndex::Referrers(std::string_view repository,
                                                             const Digest& subject) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_,
                   "SELECT digest, media_type, artifact_type, subject, size, annotations "
                   "FROM manifests WHERE repository = ? AND subject = ? "
                   "ORDER BY created_ms, digest");
  select.Bind(1, repository).Bind(2, subject.str());
  std::vector<ManifestRecord> records;
  int result = 0;
  while ((result = select.Step()) == SQLITE_ROW) {
    PERCH_ASSIGN_OR_RETURN(ManifestRecord record, impl_->ReadManifest(select));
    records.push_back(std::move(record));
  }
  PERCH_RETURN_IF_ERROR(select.Check(result, "list referrers"));
  return records;
}

Status RegistryIndex::AddUpload(std::string_view id, std::string_view repository) {
  std::lock_guard lock(impl_->mutex);
  Statement insert(impl_->db_, "INSERT INTO uploads(id, repository, created_ms) VALUES (?, ?, ?)");
  return insert.Bind(1, id).Bind(2, repository).Bind(3, NowUnixMs()).Run("record an upload");
}

Result<std::string> RegistryIndex::UploadRepository(std::string_view id) {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_, "SELECT repository FROM uploads WHERE id = ?");
  select.Bind(1, id);
  const int result = select.Step();
  if (result == SQLITE_ROW) {
    return select.Text(0);
  }
  PERCH_RETURN_IF_ERROR(select.Check(result, "look up an upload"));
  return NotFound(fmt::format("upload {} is not known", id));
}

Status RegistryIndex::RemoveUpload(std::string_view id) {
  std::lock_guard lock(impl_->mutex);
  Statement remove(impl_->db_, "DELETE FROM uploads WHERE id = ?");
  return remove.Bind(1, id).Run("forget an upload");
}

Result<std::vector<std::string>> RegistryIndex::ListUploads() {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_, "SELECT id FROM uploads ORDER BY id");
  return impl_->Strings(select, "list uploads");
}

Result<std::vector<Digest>> RegistryIndex::LiveDigests() {
  std::lock_guard lock(impl_->mutex);
  Statement select(impl_->db_,
                   "SELECT digest FROM manifests UNION SELECT digest FROM manifest_references "
                   "UNION SELECT subject FROM manifests WHERE subject IS NOT NULL");
  PERCH_ASSIGN_OR_RETURN(const std::vector<std::string> texts,
                         impl_->Strings(select, "mark live blobs"));
  std::vector<Digest> digests;
  digests.reserve(texts.size());
  for (const std::string& text : texts) {
    PERCH_ASSIGN_OR_RETURN(Digest digest, StoredDigest(text));
    digests.push_back(std::move(digest));
  }
  return digests;
}

}  // namespace perch
