// The one mapping between perch status codes and HTTP status codes, both
// ways: servers answer with HttpStatusFor, clients read answers with
// StatusCodeForHttp.
#pragma once

#include "core/status.h"

namespace perch {

int HttpStatusFor(StatusCode code);

// What an HTTP error answer means to the caller: 5xx are the server's
// trouble (Unavailable: worth retrying), other 4xx InvalidArgument.
StatusCode StatusCodeForHttp(int http_status);

}  // namespace perch
