#include "bundle/archive_library.h"

#include "core/dynamic_library.h"

namespace perch::bundle {

Result<ArchiveLibrary> OpenArchiveLibrary(const char* file) {
  constexpr std::string_view kPackage = "libarchive13";
  PERCH_ASSIGN_OR_RETURN(void* const handle,
                         OpenLibrary(file, "reads and writes bundles with", kPackage));
  ArchiveLibrary library;
  const auto resolve = [&](const char* name, auto& function) {
    return Resolve(handle, file, name, kPackage, function);
  };
  PERCH_RETURN_IF_ERROR(resolve("archive_error_string", library.error_string));
  PERCH_RETURN_IF_ERROR(resolve("archive_read_new", library.read_new));
  PERCH_RETURN_IF_ERROR(resolve("archive_read_free", library.read_free));
  PERCH_RETURN_IF_ERROR(
      resolve("archive_read_support_format_tar", library.read_support_format_tar));
  PERCH_RETURN_IF_ERROR(
      resolve("archive_read_support_format_gnutar", library.read_support_format_gnutar));
  PERCH_RETURN_IF_ERROR(resolve("archive_read_open_filename", library.read_open_filename));
  PERCH_RETURN_IF_ERROR(resolve("archive_read_open_memory", library.read_open_memory));
  PERCH_RETURN_IF_ERROR(resolve("archive_read_next_header", library.read_next_header));
  PERCH_RETURN_IF_ERROR(resolve("archive_read_data", library.read_data));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_pathname", library.entry_pathname));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_filetype", library.entry_filetype));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_hardlink", library.entry_hardlink));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_symlink", library.entry_symlink));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_size_is_set", library.entry_size_is_set));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_size", library.entry_size));
  PERCH_RETURN_IF_ERROR(resolve("archive_write_new", library.write_new));
  PERCH_RETURN_IF_ERROR(resolve("archive_write_free", library.write_free));
  PERCH_RETURN_IF_ERROR(
      resolve("archive_write_set_format_pax_restricted", library.write_set_format_pax_restricted));
  PERCH_RETURN_IF_ERROR(resolve("archive_write_open_filename", library.write_open_filename));
  PERCH_RETURN_IF_ERROR(resolve("archive_write_header", library.write_header));
  PERCH_RETURN_IF_ERROR(resolve("archive_write_data", library.write_data));
  PERCH_RETURN_IF_ERROR(resolve("archive_write_close", library.write_close));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_new", library.entry_new));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_free", library.entry_free));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_set_pathname", library.entry_set_pathname));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_set_filetype", library.entry_set_filetype));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_set_perm", library.entry_set_perm));
  PERCH_RETURN_IF_ERROR(resolve("archive_entry_set_size", library.entry_set_size));
  return library;
}

Result<const ArchiveLibrary*> LoadArchive() {
  // Loaded once per process: a function-local static is initialised exactly
  // once, thread-safely, while hiding the table from everyone else. Never
  // unloaded: bundles may be read on any thread until the process exits.
  static const Result<ArchiveLibrary> loaded = OpenArchiveLibrary(kArchiveLibrary);
  if (!loaded.ok()) {
    return loaded.status();
  }
  return &*loaded;
}

}  // namespace perch::bundle
