// libcurl's entry points as client.cpp calls them, opened with dlopen at the
// first Client::Create instead of by the dynamic loader at every start of
// perch. libcurl and the ~30 libraries under it (GnuTLS, Kerberos, LDAP,
// libssh2, ...) cost about 6 ms of CPU at each process start, and most of
// perch's commands, `perch serve --repo` among them, make no HTTP call
// (bench/RESULTS.md, "Cold start (session 8)").
//
// Internal to http/: client.cpp is its only user, and libcurl's types stay
// there and here.
//
// Threading: LoadCurl may be called from any thread at any time; the table
// it returns is immutable and shared by all threads.
#pragma once

#include <curl/curl.h>

#include "core/status.h"

namespace perch::http {

// The file dlopen loads: libcurl's soname, the same since libcurl 7.16.
inline constexpr const char* kCurlLibrary = "libcurl.so.4";

struct CurlLibrary {
  decltype(&curl_global_init) global_init = nullptr;
  decltype(&curl_easy_init) easy_init = nullptr;
  decltype(&curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&curl_easy_reset) easy_reset = nullptr;
  decltype(&curl_easy_setopt) easy_setopt = nullptr;
  decltype(&curl_easy_getinfo) easy_getinfo = nullptr;
  decltype(&curl_easy_perform) easy_perform = nullptr;
  decltype(&curl_easy_strerror) easy_strerror = nullptr;
  decltype(&curl_slist_append) slist_append = nullptr;
  decltype(&curl_slist_free_all) slist_free_all = nullptr;
};

// Loads libcurl and runs its global initialisation the first time; later
// calls return the same table, or the same error. Unavailable when the
// library or one of its functions is missing (the message names the file and
// the package to install), Internal when libcurl fails to initialise. The
// library stays loaded until the process exits.
Result<const CurlLibrary*> LoadCurl();

// Opens `file` as a libcurl and looks its functions up, without
// initialising it: LoadCurl's first step, separate so that tests can point
// it at a file that is not libcurl. The handle is never closed.
Result<CurlLibrary> OpenCurlLibrary(const char* file);

}  // namespace perch::http
