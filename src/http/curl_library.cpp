#include "http/curl_library.h"

#include <dlfcn.h>
#include <fmt/format.h>

namespace perch::http {
namespace {

// Looks one function up; `name` is also what the error reports.
template <typename Function>
Status Resolve(void* handle, const char* file, const char* name, Function& function) {
  void* const symbol = dlsym(handle, name);
  if (symbol == nullptr) {
    return Unavailable(
        fmt::format("{} has no function {}: it is not libcurl 7.85 or later; "
                    "install Debian's libcurl4 package",
                    file, name));
  }
  // POSIX guarantees that dlsym's object pointer converts to the function's type.
  function = reinterpret_cast<Function>(symbol);
  return Status::Ok();
}

Result<CurlLibrary> Initialised() {
  PERCH_ASSIGN_OR_RETURN(CurlLibrary library, OpenCurlLibrary(kCurlLibrary));
  if (const CURLcode code = library.global_init(CURL_GLOBAL_DEFAULT); code != CURLE_OK) {
    return Internal(fmt::format("libcurl failed to start: {}", library.easy_strerror(code)));
  }
  return library;
}

}  // namespace

Result<CurlLibrary> OpenCurlLibrary(const char* file) {
  // RTLD_LOCAL: libcurl's symbols serve only the pointers below.
  void* const handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* const error = dlerror();
    return Unavailable(
        fmt::format("cannot load libcurl, which perch makes HTTP calls with ({}); "
                    "install Debian's libcurl4 package",
                    error != nullptr ? error : file));
  }
  CurlLibrary library;
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_global_init", library.global_init));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_easy_init", library.easy_init));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_easy_cleanup", library.easy_cleanup));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_easy_reset", library.easy_reset));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_easy_setopt", library.easy_setopt));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_easy_getinfo", library.easy_getinfo));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_easy_perform", library.easy_perform));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_easy_strerror", library.easy_strerror));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_slist_append", library.slist_append));
  PERCH_RETURN_IF_ERROR(Resolve(handle, file, "curl_slist_free_all", library.slist_free_all));
  return library;
}

Result<const CurlLibrary*> LoadCurl() {
  // Loading and libcurl's global initialisation happen once per process:
  // curl_global_init is not safe to run from two threads at once, and a
  // function-local static is initialised exactly once, thread-safely, while
  // hiding the table from everyone else. Never unloaded: other threads'
  // clients may outlive any point where that would be safe.
  static const Result<CurlLibrary> loaded = Initialised();
  if (!loaded.ok()) {
    return loaded.status();
  }
  return &*loaded;
}

}  // namespace perch::http
