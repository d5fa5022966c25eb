// Internal to http/: what the server's connections share with it (options,
// routes, the handler threads, the counts Stop waits on) and the route
// lookup. Not a public header.
//
// Threading: `routes` is written before Start only; the counts and the set
// of open connections are guarded by `mutex`.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "http/handler_pool.h"
#include "http/server.h"

namespace perch::http {

struct CompiledRoute {
  std::string method;
  std::regex pattern;
  // What every path the pattern matches starts with: a route whose prefix
  // the path lacks is passed over without running the regex (std::regex
  // costs a microsecond or more per route tried).
  std::string literal_prefix;
  Handler handler;
  RouteOptions options;
};

class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  // Closes the socket from its strand; pending operations end.
  virtual void PostClose() = 0;
};

// What every connection shares: options, routes, handler threads, and the
// counts Stop waits on. Owned by Server::Impl, outlives every connection.
struct ServerCore {
  ServerCore(ServerOptions server_options, Logger server_logger)
      : options(std::move(server_options)), logger(std::move(server_logger)) {}

  void Register(uint64_t id, std::weak_ptr<ConnectionBase> connection) {
    const std::lock_guard lock(mutex);
    open.emplace(id, std::move(connection));
  }
  void Unregister(uint64_t id) {
    {
      const std::lock_guard lock(mutex);
      open.erase(id);
    }
    changed.notify_all();
  }
  void BeginRequest() {
    const std::lock_guard lock(mutex);
    ++in_flight;
  }
  void EndRequest() {
    {
      const std::lock_guard lock(mutex);
      --in_flight;
    }
    changed.notify_all();
  }

  const ServerOptions options;
  const Logger logger;
  std::vector<CompiledRoute> routes;  // written before Start only
  std::unique_ptr<HandlerPool> pool;  // set by Start
  std::atomic<bool> stopping{false};
  std::atomic<size_t> connections{0};  // counted against max_connections
  std::atomic<uint64_t> next_id{0};

  std::mutex mutex;
  std::condition_variable changed;
  std::unordered_map<uint64_t, std::weak_ptr<ConnectionBase>> open;  // guarded by mutex
  size_t in_flight = 0;                                              // guarded by mutex
};

struct RouteLookup {
  const CompiledRoute* route = nullptr;
  std::vector<std::string> matches;
  std::string allowed;  // the methods of routes whose pattern matched, when none took the method
};

// The first route whose pattern matches the whole `path` and takes
// `method` (GET routes take HEAD too); when none does, the methods of those
// whose pattern matched, for 405's Allow.
RouteLookup FindRoute(const std::vector<CompiledRoute>& routes, std::string_view method,
                      const std::string& path);

// The literal text an ECMAScript `pattern` matched in whole must start
// with: its leading characters up to the first special one, less the last
// when a quantifier follows it; empty for a pattern with an alternative.
std::string LiteralPrefix(std::string_view pattern);

}  // namespace perch::http
