// libarchive's entry points as bundle_reader.cpp and bundle_writer.cpp call
// them, opened with dlopen at the first bundle read or write instead of by
// the dynamic loader at every start of perch. libarchive and the libraries
// under it (libxml2, ICU, liblzma, ...) cost about 1.7 ms of CPU, 100 page
// faults and 1.8 MiB of RSS in every process, and only the bundle commands and
// `perch serve --bundles` use it (bench/RESULTS.md, "Cold start (session 8)").
//
// Internal to bundle/: libarchive's types stay in its .cpp files and here.
//
// Threading: LoadArchive may be called from any thread at any time; the
// table it returns is immutable and shared by all threads.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include "core/status.h"

namespace perch::bundle {

// The file dlopen loads: libarchive's soname, the same since libarchive 3.0.
inline constexpr const char* kArchiveLibrary = "libarchive.so.13";

struct ArchiveLibrary {
  decltype(&archive_error_string) error_string = nullptr;
  // Reading.
  decltype(&archive_read_new) read_new = nullptr;
  decltype(&archive_read_free) read_free = nullptr;
  decltype(&archive_read_support_format_tar) read_support_format_tar = nullptr;
  decltype(&archive_read_support_format_gnutar) read_support_format_gnutar = nullptr;
  decltype(&archive_read_open_filename) read_open_filename = nullptr;
  decltype(&archive_read_open_memory) read_open_memory = nullptr;
  decltype(&archive_read_next_header) read_next_header = nullptr;
  decltype(&archive_read_data) read_data = nullptr;
  decltype(&archive_entry_pathname) entry_pathname = nullptr;
  decltype(&archive_entry_filetype) entry_filetype = nullptr;
  decltype(&archive_entry_hardlink) entry_hardlink = nullptr;
  decltype(&archive_entry_symlink) entry_symlink = nullptr;
  decltype(&archive_entry_size_is_set) entry_size_is_set = nullptr;
  decltype(&archive_entry_size) entry_size = nullptr;
  // Writing.
  decltype(&archive_write_new) write_new = nullptr;
  decltype(&archive_write_free) write_free = nullptr;
  decltype(&archive_write_set_format_pax_restricted) write_set_format_pax_restricted = nullptr;
  decltype(&archive_write_open_filename) write_open_filename = nullptr;
  decltype(&archive_write_header) write_header = nullptr;
  decltype(&archive_write_data) write_data = nullptr;
  decltype(&archive_write_close) write_close = nullptr;
  decltype(&archive_entry_new) entry_new = nullptr;
  decltype(&archive_entry_free) entry_free = nullptr;
  decltype(&archive_entry_set_pathname) entry_set_pathname = nullptr;
  decltype(&archive_entry_set_filetype) entry_set_filetype = nullptr;
  decltype(&archive_entry_set_perm) entry_set_perm = nullptr;
  decltype(&archive_entry_set_size) entry_set_size = nullptr;
};

// Loads libarchive the first time; later calls return the same table, or
// the same error. Unavailable when the library or one of its functions is
// missing (the message names the file and the package to install). The
// library stays loaded until the process exits.
Result<const ArchiveLibrary*> LoadArchive();

// Opens `file` as a libarchive and looks its functions up: LoadArchive's
// work, separate so that tests can point it at a file that is not libarchive.
Result<ArchiveLibrary> OpenArchiveLibrary(const char* file);

}  // namespace perch::bundle
