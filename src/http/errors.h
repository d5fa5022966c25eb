// The one mapping between perch's Status and HTTP, and the one JSON error
// body every perch HTTP API answers with (the OCI registry routes excepted:
// the Distribution spec fixes their error shape):
//
//   {"error": "<what was wrong, for the user who has to fix it>",
//    "code": "<StatusCode name: InvalidArgument, NotFound, ResourceExhausted, ...>"}
//
// The MQTT bridge puts the same two fields in its error answers.
#pragma once

#include <string>

#include "core/status.h"
#include "http/message.h"

namespace perch::http {

int HttpStatusFor(StatusCode code);

// What an HTTP error answer means to a client: 5xx are the server's
// trouble (Unavailable: worth retrying), other 4xx InvalidArgument, unless
// a more precise code fits (401, 403, 404, 409, 413, 429, 504).
StatusCode StatusCodeForHttp(int http_status);

// {"error": ..., "code": ...} for `status` (never ok).
std::string ErrorJson(const Status& status);

// Answers `status` with its HTTP status and the JSON error body; a 503 also
// carries Retry-After: 1.
void SetError(Response& response, const Status& status);
// Answers `http_status` with a JSON body.
void SetJson(Response& response, int http_status, std::string body);

}  // namespace perch::http
