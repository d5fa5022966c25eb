#include "bundle/bundle_reader.h"

#include <fmt/format.h>

#include <memory>
#include <random>

#include "bundle/archive_library.h"
#include "bundle/bundle_format.h"
#include "store/model_artifact.h"

namespace perch::bundle {
namespace {

constexpr size_t kBufferBytes = size_t{1} << 20;
constexpr std::string_view kBlobPrefix = "blobs/sha256/";

struct ArchiveCloser {
  const ArchiveLibrary* api;
  void operator()(archive* a) const { api->read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveCloser>;

ArchivePtr NewReader(const ArchiveLibrary& api) {
  ArchivePtr reader(api.read_new(), ArchiveCloser{&api});
  // Only tar, uncompressed: the layout's blobs carry their own encoding,
  // and every other format is surface an attacker could use.
  api.read_support_format_tar(reader.get());
  api.read_support_format_gnutar(reader.get());
  return reader;
}

std::string ArchiveError(const ArchiveLibrary& api, archive* reader) {
  const char* text = api.error_string(reader);
  return text != nullptr ? text : "unreadable archive";
}

// The entry's name without a leading "./"; empty when it is not a name the
// layout has.
std::string CleanName(std::string_view name) {
  if (name.starts_with("./")) {
    name.remove_prefix(2);
  }
  while (name.size() > 1 && name.back() == '/') {
    name.remove_suffix(1);
  }
  return std::string(name);
}

std::string RandomSuffix() {
  std::random_device device;
  return fmt::format("{:08x}{:08x}", device(), device());
}

// Reads the entry's data (at most `max` bytes) into memory.
Result<std::string> ReadSmall(const ArchiveLibrary& api, archive* reader, const std::string& name,
                              uint64_t max) {
  std::string bytes;
  std::string buffer(64 << 10, '\0');
  while (true) {
    const la_ssize_t got = api.read_data(reader, buffer.data(), buffer.size());
    if (got < 0) {
      return InvalidArgument(
          fmt::format("bundle entry {}: the bundle is not a complete tar file: {}", name,
                      ArchiveError(api, reader)));
    }
    if (got == 0) {
      return bytes;
    }
    if (bytes.size() + static_cast<size_t>(got) > max) {
      return InvalidArgument(fmt::format("bundle entry {} is larger than {} bytes", name, max));
    }
    bytes.append(buffer.data(), static_cast<size_t>(got));
  }
}

// Streams the entry's data through a hasher, into `blobs` unless the store
// has it already; its bytes must hash to `digest` and number `size`.
Status ReadBlob(const ArchiveLibrary& api, archive* reader, const Digest& digest, uint64_t size,
                BlobStore& blobs, std::string& buffer) {
  std::unique_ptr<BlobWriter> writer;
  Sha256 hasher;
  const bool present = blobs.Has(digest);
  if (!present) {
    PERCH_ASSIGN_OR_RETURN(
        writer, blobs.OpenWriter(fmt::format("bundle-{}-{}", digest.hex(), RandomSuffix()),
                                 /*resume=*/false));
  }
  uint64_t total = 0;
  while (true) {
    const la_ssize_t got = api.read_data(reader, buffer.data(), buffer.size());
    if (got < 0) {
      return InvalidArgument(
          fmt::format("bundle entry blobs/sha256/{}: the bundle is not a complete tar file: {}",
                      digest.hex(), ArchiveError(api, reader)));
    }
    if (got == 0) {
      break;
    }
    const std::string_view piece(buffer.data(), static_cast<size_t>(got));
    total += piece.size();
    if (writer) {
      PERCH_RETURN_IF_ERROR(writer->Append(piece));
    } else {
      hasher.Update(piece);
    }
  }
  if (total != size) {
    return InvalidArgument(fmt::format(
        "bundle entry blobs/sha256/{}: {} bytes where its header says {} (a truncated bundle)",
        digest.hex(), total, size));
  }
  if (writer) {
    auto committed = writer->Commit(digest, size);
    if (!committed.ok()) {
      return InvalidArgument(
          fmt::format("bundle entry blobs/sha256/{}: its bytes do not match its digest ({})",
                      digest.hex(), committed.status().message()));
    }
    return Status::Ok();
  }
  const Digest actual = hasher.Finish();
  if (actual != digest) {
    return InvalidArgument(
        fmt::format("bundle entry blobs/sha256/{}: its bytes do not match its digest (they hash "
                    "to {})",
                    digest.hex(), actual.str()));
  }
  return Status::Ok();
}

Result<BundleContents> ReadAll(const ArchiveLibrary& api, archive* reader, BlobStore& blobs,
                               const ReaderLimits& limits) {
  BundleContents contents;
  bool have_layout = false;
  bool have_index = false;
  std::string buffer(kBufferBytes, '\0');
  uint64_t entries = 0;
  while (true) {
    archive_entry* entry = nullptr;
    const int next = api.read_next_header(reader, &entry);
    if (next == ARCHIVE_EOF) {
      break;
    }
    if (next != ARCHIVE_OK) {
      return InvalidArgument(
          fmt::format("the bundle is not a complete tar file: {}", ArchiveError(api, reader)));
    }
    if (++entries > limits.max_entries) {
      return InvalidArgument(
          fmt::format("the bundle has more than {} entries", limits.max_entries));
    }
    const char* raw_name = api.entry_pathname(entry);
    const std::string shown = raw_name != nullptr ? raw_name : "";
    const std::string name = CleanName(shown);
    const mode_t type = api.entry_filetype(entry);
    if (api.entry_hardlink(entry) != nullptr || api.entry_symlink(entry) != nullptr ||
        type == AE_IFLNK) {
      return InvalidArgument(
          fmt::format("bundle entry \"{}\" is a link; a bundle holds only files", shown));
    }
    if (type == AE_IFDIR) {
      if (name != "blobs" && name != "blobs/sha256") {
        return InvalidArgument(
            fmt::format("bundle entry \"{}\" is not part of an OCI image layout", shown));
      }
      continue;
    }
    if (type != AE_IFREG) {
      return InvalidArgument(fmt::format(
          "bundle entry \"{}\" is a device or other special file; a bundle holds only files",
          shown));
    }
    if (!api.entry_size_is_set(entry) || api.entry_size(entry) < 0) {
      return InvalidArgument(fmt::format("bundle entry \"{}\" has no size", shown));
    }
    const auto size = static_cast<uint64_t>(api.entry_size(entry));
    if (name == kLayoutFile || name == kIndexFile) {
      bool& seen = name == kLayoutFile ? have_layout : have_index;
      if (seen) {
        return InvalidArgument(fmt::format("bundle entry {} appears twice", name));
      }
      seen = true;
      if (size > kMaxManifestBytes) {
        return InvalidArgument(fmt::format("bundle entry {} declares {} bytes, more than {}", name,
                                           size, kMaxManifestBytes));
      }
      PERCH_ASSIGN_OR_RETURN(std::string bytes, ReadSmall(api, reader, name, kMaxManifestBytes));
      if (bytes.size() != size) {
        return InvalidArgument(fmt::format("bundle entry {} is truncated", name));
      }
      (name == kLayoutFile ? contents.layout : contents.index) = std::move(bytes);
      continue;
    }
    if (!name.starts_with(kBlobPrefix)) {
      return InvalidArgument(
          fmt::format("bundle entry \"{}\" is not part of an OCI image layout", shown));
    }
    auto digest = Digest::Parse("sha256:" + name.substr(kBlobPrefix.size()));
    if (!digest.ok()) {
      return InvalidArgument(
          fmt::format("bundle entry \"{}\" is not named by a sha256 digest", shown));
    }
    if (contents.blobs.contains(*digest)) {
      return InvalidArgument(fmt::format("bundle entry \"{}\" appears twice", shown));
    }
    if (size > limits.max_blob_bytes) {
      return InvalidArgument(
          fmt::format("bundle entry \"{}\" declares {} bytes, more than the {} a blob may have",
                      shown, size, limits.max_blob_bytes));
    }
    PERCH_RETURN_IF_ERROR(ReadBlob(api, reader, *digest, size, blobs, buffer));
    contents.blobs.emplace(*digest, size);
  }
  if (!have_layout || !have_index) {
    return InvalidArgument(fmt::format("the bundle has no {}: not an OCI image layout",
                                       have_layout ? "index.json" : "oci-layout"));
  }
  return contents;
}

}  // namespace

Result<BundleContents> ReadBundleFile(const std::filesystem::path& path, BlobStore& blobs,
                                      const ReaderLimits& limits) {
  PERCH_ASSIGN_OR_RETURN(const ArchiveLibrary* loaded, LoadArchive());
  const ArchiveLibrary& api = *loaded;
  ArchivePtr reader = NewReader(api);
  if (api.read_open_filename(reader.get(), path.c_str(), kBufferBytes) != ARCHIVE_OK) {
    return InvalidArgument(
        fmt::format("cannot read bundle {}: {}", path.string(), ArchiveError(api, reader.get())));
  }
  return ReadAll(api, reader.get(), blobs, limits);
}

Result<BundleContents> ReadBundleMemory(std::string_view bytes, BlobStore& blobs,
                                        const ReaderLimits& limits) {
  PERCH_ASSIGN_OR_RETURN(const ArchiveLibrary* loaded, LoadArchive());
  const ArchiveLibrary& api = *loaded;
  ArchivePtr reader = NewReader(api);
  if (api.read_open_memory(reader.get(), bytes.data(), bytes.size()) != ARCHIVE_OK) {
    return InvalidArgument(
        fmt::format("cannot read the bundle: {}", ArchiveError(api, reader.get())));
  }
  return ReadAll(api, reader.get(), blobs, limits);
}

}  // namespace perch::bundle
