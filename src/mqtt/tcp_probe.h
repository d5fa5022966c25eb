// Internal to mqtt/: whether a TCP connection to the broker opens, within a
// bound and giving up at once when asked to stop.
//
// libmosquitto connects with a blocking connect() when the CONNECT carries
// MQTT 5 properties (its asynchronous connect takes none, and the
// persistent session needs Session Expiry): where the broker's address
// drops SYNs instead of refusing them, that call waits for the kernel's SYN
// retries, about two minutes, and a Stop waits with it. Connection probes
// the address first, so that an unreachable broker costs at most `timeout`
// per attempt and never holds a Stop up; the blocking connect that follows
// a probe that opened finds the path open.
//
// Threading: a free function; `stopping` is called on the caller's thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "core/status.h"

namespace perch::mqtt {

// Ok once a connection to host:port opened (it is closed at once);
// Unavailable, with the reason, when none did within `timeout`; Cancelled
// as soon as `stopping` (checked every 100 ms) returns true. Name
// resolution (getaddrinfo) is not bounded: a numeric address takes none.
Status ProbeTcp(const std::string& host, int port, std::chrono::milliseconds timeout,
                const std::function<bool()>& stopping);

}  // namespace perch::mqtt
