#include "core/dynamic_library.h"

#include <dlfcn.h>
#include <fmt/format.h>

namespace perch {

Result<void*> OpenLibrary(const char* file, std::string_view purpose, std::string_view package) {
  // RTLD_LOCAL: the library's symbols serve only its user's table.
  void* const library = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* const error = dlerror();
    return Unavailable(
        fmt::format("cannot load {}, which perch {} ({}); install Debian's {} "
                    "package",
                    file, purpose, error != nullptr ? error : "not found", package));
  }
  return library;
}

Result<void*> FindFunction(void* library, const char* file, const char* name,
                           std::string_view package) {
  void* const symbol = dlsym(library, name);
  if (symbol == nullptr) {
    return Unavailable(fmt::format(
        "{} has no function {}: it is not the library perch was built for; install Debian's {} "
        "package",
        file, name, package));
  }
  return symbol;
}

}  // namespace perch
