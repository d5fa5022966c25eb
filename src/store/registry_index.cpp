#include "store/registry_index.h"

#include <fmt/format.h>

#include <mutex>

#include "core/sqlite.h"

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
  Impl(std::unique_ptr<SqliteDb> opened, WallClock stamps)
      : db(std::move(opened)), clock(std::move(stamps)) {}

  Status EnsureRepository(std::string_view repository) {
    PERCH_ASSIGN_OR_RETURN(SqliteStatement insert,
                           db->Prepare("INSERT OR IGNORE INTO repositories(name) VALUES (?)"));
    return insert.Bind(1, repository).Run("record a repository");
  }

  Result<std::vector<std::string>> Strings(SqliteStatement& select, std::string_view what) {
    std::vector<std::string> names;
    while (select.Step()) {
      names.push_back(select.Text(0));
    }
    PERCH_RETURN_IF_ERROR(select.Finish(what));
    return names;
  }

  Result<ManifestRecord> ReadManifest(const SqliteStatement& select) {
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

  // Runs a statement that reads at most one row: `read` takes the row;
  // NotFound with `missing` when there is none.
  template <typename T, typename Read>
  Result<T> SelectOne(SqliteStatement& select, std::string_view what, Read read,
                      const std::string& missing) {
    if (select.Step()) {
      return read(select);
    }
    PERCH_RETURN_IF_ERROR(select.Finish(what));
    return NotFound(missing);
  }

  std::mutex mutex;
  const std::unique_ptr<SqliteDb> db;  // guarded by mutex
  const WallClock clock;
};

Result<std::unique_ptr<RegistryIndex>> RegistryIndex::Open(const RegistryIndexOptions& options) {
  // FULL: a manifest the hub acknowledged survives a power loss; pushes are
  // rare enough that the extra flush does not matter. The long busy timeout
  // lets `perch hub gc` and the hub share the file.
  PERCH_ASSIGN_OR_RETURN(auto db, SqliteDb::Open({.path = options.file,
                                                  .full_sync = true,
                                                  .schema = kSchema,
                                                  .busy_timeout = std::chrono::seconds(10)}));
  return std::unique_ptr<RegistryIndex>(
      new RegistryIndex(std::make_unique<Impl>(std::move(db), options.clock)));
}

RegistryIndex::RegistryIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RegistryIndex::~RegistryIndex() = default;

Status RegistryIndex::LinkBlob(std::string_view repository, const Digest& digest, uint64_t size) {
  std::lock_guard lock(impl_->mutex);
  SqliteDb& db = *impl_->db;
  PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, db.Begin());
  PERCH_RETURN_IF_ERROR(impl_->EnsureRepository(repository));
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement insert,
      db.Prepare("INSERT OR REPLACE INTO blob_links(repository, digest, size) VALUES (?, ?, ?)"));
  PERCH_RETURN_IF_ERROR(insert.Bind(1, repository)
                            .Bind(2, digest.str())
                            .Bind(3, static_cast<int64_t>(size))
                            .Run("link a blob"));
  return transaction.Commit();
}

Result<uint64_t> RegistryIndex::LinkedBlobSize(std::string_view repository, const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement select,
      impl_->db->Prepare("SELECT size FROM blob_links WHERE repository = ? AND digest = ?"));
  select.Bind(1, repository).Bind(2, digest.str());
  return impl_->SelectOne<uint64_t>(
      select, "look up a blob",
      [](const SqliteStatement& row) { return static_cast<uint64_t>(row.Int(0)); },
      fmt::format("blob {} is not in repository {}", digest.str(), repository));
}

Status RegistryIndex::UnlinkBlob(std::string_view repository, const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement remove,
      impl_->db->Prepare("DELETE FROM blob_links WHERE repository = ? AND digest = ?"));
  PERCH_RETURN_IF_ERROR(remove.Bind(1, repository).Bind(2, digest.str()).Run("unlink a blob"));
  if (impl_->db->Changes() == 0) {
    return NotFound(fmt::format("blob {} is not in repository {}", digest.str(), repository));
  }
  return Status::Ok();
}

Status RegistryIndex::UnlinkBlobEverywhere(const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement remove,
                         impl_->db->Prepare("DELETE FROM blob_links WHERE digest = ?"));
  return remove.Bind(1, digest.str()).Run("unlink a collected blob");
}

Status RegistryIndex::PutManifest(std::string_view repository, const ManifestRecord& manifest,
                                  std::string_view tag) {
  std::lock_guard lock(impl_->mutex);
  SqliteDb& db = *impl_->db;
  PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, db.Begin());
  PERCH_RETURN_IF_ERROR(impl_->EnsureRepository(repository));
  PERCH_ASSIGN_OR_RETURN(SqliteStatement insert,
                         db.Prepare("INSERT OR REPLACE INTO manifests(repository, digest, "
                                    "media_type, artifact_type, subject, size, annotations, "
                                    "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, repository)
      .Bind(2, manifest.digest.str())
      .Bind(3, manifest.media_type)
      .Bind(4, manifest.artifact_type)
      .Bind(6, static_cast<int64_t>(manifest.size))
      .Bind(7, manifest.annotations)
      .Bind(8, impl_->clock.UnixMillis());
  if (manifest.subject) {
    insert.Bind(5, manifest.subject->str());
  } else {
    insert.BindNull(5);
  }
  PERCH_RETURN_IF_ERROR(insert.Run("store a manifest"));
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement clear,
      db.Prepare("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?"));
  PERCH_RETURN_IF_ERROR(clear.Bind(1, repository)
                            .Bind(2, manifest.digest.str())
                            .Run("replace a manifest's references"));
  PERCH_ASSIGN_OR_RETURN(SqliteStatement add,
                         db.Prepare("INSERT OR IGNORE INTO manifest_references(repository, "
                                    "manifest, digest) VALUES (?, ?, ?)"));
  for (const Digest& reference : manifest.references) {
    PERCH_RETURN_IF_ERROR(add.Bind(1, repository)
                              .Bind(2, manifest.digest.str())
                              .Bind(3, reference.str())
                              .Run("record a manifest's references"));
  }
  if (!tag.empty()) {
    PERCH_ASSIGN_OR_RETURN(
        SqliteStatement tag_it,
        db.Prepare("INSERT OR REPLACE INTO tags(repository, tag, digest) VALUES (?, ?, ?)"));
    PERCH_RETURN_IF_ERROR(
        tag_it.Bind(1, repository).Bind(2, tag).Bind(3, manifest.digest.str()).Run("tag"));
  }
  return transaction.Commit();
}

Result<ManifestRecord> RegistryIndex::GetManifest(std::string_view repository,
                                                  const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement select,
                         impl_->db->Prepare("SELECT digest, media_type, artifact_type, subject, "
                                            "size, annotations FROM manifests "
                                            "WHERE repository = ? AND digest = ?"));
  select.Bind(1, repository).Bind(2, digest.str());
  return impl_->SelectOne<ManifestRecord>(
      select, "look up a manifest",
      [&](const SqliteStatement& row) { return impl_->ReadManifest(row); },
      fmt::format("manifest {} is not in repository {}", digest.str(), repository));
}

Result<Digest> RegistryIndex::ResolveTag(std::string_view repository, std::string_view tag) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement select,
      impl_->db->Prepare("SELECT digest FROM tags WHERE repository = ? AND tag = ?"));
  select.Bind(1, repository).Bind(2, tag);
  return impl_->SelectOne<Digest>(
      select, "look up a tag", [](const SqliteStatement& row) { return StoredDigest(row.Text(0)); },
      fmt::format("tag {} is not in repository {}", tag, repository));
}

Status RegistryIndex::DeleteManifest(std::string_view repository, const Digest& digest) {
  std::lock_guard lock(impl_->mutex);
  SqliteDb& db = *impl_->db;
  PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, db.Begin());
  PERCH_ASSIGN_OR_RETURN(SqliteStatement remove,
                         db.Prepare("DELETE FROM manifests WHERE repository = ? AND digest = ?"));
  PERCH_RETURN_IF_ERROR(remove.Bind(1, repository).Bind(2, digest.str()).Run("delete a manifest"));
  if (db.Changes() == 0) {
    return NotFound(fmt::format("manifest {} is not in repository {}", digest.str(), repository));
  }
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement references,
      db.Prepare("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?"));
  PERCH_RETURN_IF_ERROR(
      references.Bind(1, repository).Bind(2, digest.str()).Run("delete a manifest's references"));
  PERCH_ASSIGN_OR_RETURN(SqliteStatement tags,
                         db.Prepare("DELETE FROM tags WHERE repository = ? AND digest = ?"));
  PERCH_RETURN_IF_ERROR(
      tags.Bind(1, repository).Bind(2, digest.str()).Run("delete a manifest's tags"));
  return transaction.Commit();
}

Status RegistryIndex::DeleteTag(std::string_view repository, std::string_view tag) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement remove,
                         impl_->db->Prepare("DELETE FROM tags WHERE repository = ? AND tag = ?"));
  PERCH_RETURN_IF_ERROR(remove.Bind(1, repository).Bind(2, tag).Run("delete a tag"));
  if (impl_->db->Changes() == 0) {
    return NotFound(fmt::format("tag {} is not in repository {}", tag, repository));
  }
  return Status::Ok();
}

bool RegistryIndex::HasRepository(std::string_view repository) {
  std::lock_guard lock(impl_->mutex);
  auto select = impl_->db->Prepare("SELECT 1 FROM repositories WHERE name = ?");
  return select.ok() && select->Bind(1, repository).Step();
}

Result<std::vector<std::string>> RegistryIndex::ListTags(std::string_view repository,
                                                         std::string_view last, size_t limit) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement select,
      impl_->db->Prepare(
          "SELECT tag FROM tags WHERE repository = ? AND tag > ? ORDER BY tag LIMIT ?"));
  select.Bind(1, repository).Bind(2, last).Bind(3, static_cast<int64_t>(limit));
  return impl_->Strings(select, "list tags");
}

Result<std::vector<std::string>> RegistryIndex::ListRepositories(std::string_view last,
                                                                 size_t limit) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement select,
      impl_->db->Prepare("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?"));
  select.Bind(1, last).Bind(2, static_cast<int64_t>(limit));
  return impl_->Strings(select, "list repositories");
}

Result<std::vector<ManifestRecord>> RegistryIndex::Referrers(std::string_view repository,
                                                             const Digest& subject) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement select,
                         impl_->db->Prepare("SELECT digest, media_type, artifact_type, subject, "
                                            "size, annotations FROM manifests "
                                            "WHERE repository = ? AND subject = ? "
                                            "ORDER BY created_ms, digest"));
  select.Bind(1, repository).Bind(2, subject.str());
  std::vector<ManifestRecord> records;
  while (select.Step()) {
    PERCH_ASSIGN_OR_RETURN(ManifestRecord record, impl_->ReadManifest(select));
    records.push_back(std::move(record));
  }
  PERCH_RETURN_IF_ERROR(select.Finish("list referrers"));
  return records;
}

Status RegistryIndex::AddUpload(std::string_view id, std::string_view repository) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement insert,
      impl_->db->Prepare("INSERT INTO uploads(id, repository, created_ms) VALUES (?, ?, ?)"));
  return insert.Bind(1, id)
      .Bind(2, repository)
      .Bind(3, impl_->clock.UnixMillis())
      .Run("record an upload");
}

Result<std::string> RegistryIndex::UploadRepository(std::string_view id) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement select,
                         impl_->db->Prepare("SELECT repository FROM uploads WHERE id = ?"));
  select.Bind(1, id);
  return impl_->SelectOne<std::string>(
      select, "look up an upload", [](const SqliteStatement& row) { return row.Text(0); },
      fmt::format("upload {} is not known", id));
}

Status RegistryIndex::RemoveUpload(std::string_view id) {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement remove,
                         impl_->db->Prepare("DELETE FROM uploads WHERE id = ?"));
  return remove.Bind(1, id).Run("forget an upload");
}

Result<std::vector<std::string>> RegistryIndex::ListUploads() {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement select,
                         impl_->db->Prepare("SELECT id FROM uploads ORDER BY id"));
  return impl_->Strings(select, "list uploads");
}

Result<std::vector<Digest>> RegistryIndex::LiveDigests() {
  std::lock_guard lock(impl_->mutex);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement select,
      impl_->db->Prepare("SELECT digest FROM manifests UNION SELECT digest FROM "
                         "manifest_references UNION SELECT subject FROM manifests "
                         "WHERE subject IS NOT NULL"));
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
