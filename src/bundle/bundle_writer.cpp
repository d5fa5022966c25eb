#include "bundle/bundle_writer.h"

#include <fmt/format.h>

#include <fstream>
#include <memory>

#include "bundle/archive_library.h"
#include "bundle/bundle_format.h"

namespace perch::bundle {
namespace {

struct WriterCloser {
  const ArchiveLibrary* api;
  void operator()(archive* a) const { api->write_free(a); }
};
struct EntryCloser {
  const ArchiveLibrary* api;
  void operator()(archive_entry* e) const { api->entry_free(e); }
};

class TarWriter {
 public:
  TarWriter(const ArchiveLibrary& api, std::filesystem::path path)
      : api_(api), path_(std::move(path)), writer_(api.write_new(), WriterCloser{&api}) {}

  Status Open() {
    api_.write_set_format_pax_restricted(writer_.get());
    if (api_.write_open_filename(writer_.get(), path_.c_str()) != ARCHIVE_OK) {
      return Error("cannot create");
    }
    return Status::Ok();
  }

  Status Folder(const std::string& name) {
    std::unique_ptr<archive_entry, EntryCloser> entry(api_.entry_new(), EntryCloser{&api_});
    api_.entry_set_pathname(entry.get(), name.c_str());
    api_.entry_set_filetype(entry.get(), AE_IFDIR);
    api_.entry_set_perm(entry.get(), 0755);
    if (api_.write_header(writer_.get(), entry.get()) != ARCHIVE_OK) {
      return Error("cannot write to");
    }
    return Status::Ok();
  }

  Status Begin(const std::string& name, uint64_t size) {
    std::unique_ptr<archive_entry, EntryCloser> entry(api_.entry_new(), EntryCloser{&api_});
    api_.entry_set_pathname(entry.get(), name.c_str());
    api_.entry_set_filetype(entry.get(), AE_IFREG);
    api_.entry_set_perm(entry.get(), 0644);
    api_.entry_set_size(entry.get(), static_cast<la_int64_t>(size));
    if (api_.write_header(writer_.get(), entry.get()) != ARCHIVE_OK) {
      return Error("cannot write to");
    }
    return Status::Ok();
  }

  Status Data(std::string_view bytes) {
    if (api_.write_data(writer_.get(), bytes.data(), bytes.size()) !=
        static_cast<la_ssize_t>(bytes.size())) {
      return Error("cannot write to");
    }
    return Status::Ok();
  }

  Status Close() {
    if (api_.write_close(writer_.get()) != ARCHIVE_OK) {
      return Error("cannot finish");
    }
    return Status::Ok();
  }

 private:
  Status Error(const char* what) {
    const char* text = api_.error_string(writer_.get());
    return Internal(fmt::format("{} {}: {}", what, path_.string(), text ? text : "I/O error"));
  }

  const ArchiveLibrary& api_;
  const std::filesystem::path path_;
  std::unique_ptr<archive, WriterCloser> writer_;
};

Status WriteAll(TarWriter& tar, const BlobStore& blobs, const std::set<Digest>& digests,
                const std::string& index_json) {
  PERCH_RETURN_IF_ERROR(tar.Open());
  PERCH_RETURN_IF_ERROR(tar.Begin(std::string(kLayoutFile), kLayoutJson.size()));
  PERCH_RETURN_IF_ERROR(tar.Data(kLayoutJson));
  PERCH_RETURN_IF_ERROR(tar.Begin(std::string(kIndexFile), index_json.size()));
  PERCH_RETURN_IF_ERROR(tar.Data(index_json));
  PERCH_RETURN_IF_ERROR(tar.Folder("blobs"));
  PERCH_RETURN_IF_ERROR(tar.Folder("blobs/sha256"));
  std::string buffer(size_t{1} << 20, '\0');
  for (const Digest& digest : digests) {
    PERCH_ASSIGN_OR_RETURN(const uint64_t size, blobs.Size(digest));
    std::ifstream in(blobs.PathOf(digest), std::ios::binary);
    if (!in) {
      return NotFound(fmt::format("blob {} is not in {}", digest.str(),
                                  blobs.PathOf(digest).parent_path().string()));
    }
    PERCH_RETURN_IF_ERROR(tar.Begin(fmt::format("blobs/sha256/{}", digest.hex()), size));
    uint64_t written = 0;
    while (in && written < size) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto got = static_cast<size_t>(in.gcount());
      PERCH_RETURN_IF_ERROR(tar.Data(std::string_view(buffer.data(), got)));
      written += got;
    }
    if (written != size) {
      return Internal(fmt::format("blob {} changed size while it was written", digest.str()));
    }
  }
  return tar.Close();
}

}  // namespace

Status WriteBundle(const std::filesystem::path& out, const BlobStore& blobs,
                   const std::set<Digest>& digests, const std::string& index_json) {
  const std::filesystem::path partial = out.string() + ".partial";
  PERCH_ASSIGN_OR_RETURN(const ArchiveLibrary* api, LoadArchive());
  Status status;
  {
    TarWriter tar(*api, partial);
    status = WriteAll(tar, blobs, digests, index_json);
  }
  std::error_code error;
  if (status.ok()) {
    std::filesystem::rename(partial, out, error);
    if (error) {
      status =
          Internal(fmt::format("cannot move {} into place: {}", out.string(), error.message()));
    }
  }
  if (!status.ok()) {
    std::filesystem::remove(partial, error);
  }
  return status;
}

}  // namespace perch::bundle
