// A shared library opened on first use (dlopen) instead of by the dynamic
// loader at every process start: for libraries that only a few commands
// need and whose loading costs every other command time (libcurl, libarchive;
// bench/RESULTS.md, "Cold start (session 8)"). Each user keeps a table of
// the library's functions, filled with Resolve.
//
// A library opened here is never closed: the functions handed out may be in
// use on any thread until the process exits.
//
// Threading: both functions may be called from any thread.
#pragma once

#include <string_view>

#include "core/status.h"

namespace perch {

// Opens `file` (a soname such as "libcurl.so.4"). Unavailable when it cannot
// be loaded; the message says what perch needs it for (`purpose`) and which
// Debian package to install.
Result<void*> OpenLibrary(const char* file, std::string_view purpose, std::string_view package);

// The address of function `name` in a library OpenLibrary returned;
// Unavailable when it has none (a wrong or too old library).
Result<void*> FindFunction(void* library, const char* file, const char* name,
                           std::string_view package);

// FindFunction, converted to the function's own pointer type.
template <typename Function>
Status Resolve(void* library, const char* file, const char* name, std::string_view package,
               Function& function) {
  PERCH_ASSIGN_OR_RETURN(void* const symbol, FindFunction(library, file, name, package));
  // POSIX guarantees that dlsym's object pointer converts to the function's type.
  function = reinterpret_cast<Function>(symbol);
  return Status::Ok();
}

}  // namespace perch
