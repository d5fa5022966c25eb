#include "http/curl_library.h"

#include <fmt/format.h>

#include "core/dynamic_library.h"

namespace perch::http {
namespace {

constexpr std::string_view kPackage = "libcurl4";

Result<CurlLibrary> Initialised() {
  PERCH_ASSIGN_OR_RETURN(CurlLibrary library, OpenCurlLibrary(kCurlLibrary));
  if (const CURLcode code = library.global_init(CURL_GLOBAL_DEFAULT); code != CURLE_OK) {
    return Internal(fmt::format("libcurl failed to start: {}", library.easy_strerror(code)));
  }
  return library;
}

}  // namespace

Result<CurlLibrary> OpenCurlLibrary(const char* file) {
  PERCH_ASSIGN_OR_RETURN(void* const handle, OpenLibrary(file, "makes HTTP calls with", kPackage));
  CurlLibrary library;
  const auto resolve = [&](const char* name, auto& function) {
    return Resolve(handle, file, name, kPackage, function);
  };
  PERCH_RETURN_IF_ERROR(resolve("curl_global_init", library.global_init));
  PERCH_RETURN_IF_ERROR(resolve("curl_easy_init", library.easy_init));
  PERCH_RETURN_IF_ERROR(resolve("curl_easy_cleanup", library.easy_cleanup));
  PERCH_RETURN_IF_ERROR(resolve("curl_easy_reset", library.easy_reset));
  PERCH_RETURN_IF_ERROR(resolve("curl_easy_setopt", library.easy_setopt));
  PERCH_RETURN_IF_ERROR(resolve("curl_easy_getinfo", library.easy_getinfo));
  PERCH_RETURN_IF_ERROR(resolve("curl_easy_perform", library.easy_perform));
  PERCH_RETURN_IF_ERROR(resolve("curl_easy_strerror", library.easy_strerror));
  PERCH_RETURN_IF_ERROR(resolve("curl_slist_append", library.slist_append));
  PERCH_RETURN_IF_ERROR(resolve("curl_slist_free_all", library.slist_free_all));
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
