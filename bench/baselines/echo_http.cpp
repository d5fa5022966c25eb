// Baseline: a bare http::Server (src/http/, the server perch's REST front
// end runs on) that answers every POST /v2/models/<m>[/versions/<v>]/infer
// with one fixed body, ignoring the request. It measures what the HTTP layer
// alone costs, so perch's REST latency on a tiny model can be compared with it.
//
// Same server settings as perch's REST front end (src/api/http_server.cpp):
// the server's default I/O threads and timeouts, 16 handler threads.
//
//   bench_echo_http [--host 127.0.0.1] [--port 0] [--threads 16]
//                   [--response-file FILE | --response-bytes N]
//                   [--content-type T] [--header NAME:VALUE]...
//
// --response-file: the exact body to send (the runner saves perch's own answer
// to the same request, so both servers send the same bytes). Prints
// "listening on PORT" on stdout once bound; SIGTERM ends it.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "core/log.h"
#include "http/server.h"

namespace {

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "error: %s\nusage: bench_echo_http [--host H] [--port P] [--threads N]\n"
               "       [--response-file FILE | --response-bytes N] [--content-type T]\n"
               "       [--header NAME:VALUE]...\n",
               error.c_str());
  std::exit(2);
}

// An OIP JSON answer for a [1,N] FP32 output whose body is about `bytes` long.
std::string SyntheticResponse(size_t bytes) {
  std::string body =
      R"({"model_name":"tiny","model_version":"1","outputs":[{"name":"output","datatype":"FP32","shape":[1,256],"data":[)";
  const std::string tail = "]}]}";
  bool first = true;
  while (body.size() + tail.size() + 4 < bytes || first) {
    body += first ? "0.5" : ",0.5";
    first = false;
  }
  return body + tail;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 0;
  int threads = 16;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage("missing value after " + arg);
      }
      return argv[++i];
    };
    if (arg == "--host") {
      host = value();
    } else if (arg == "--port") {
      port = std::stoi(value());
    } else if (arg == "--threads") {
      threads = std::stoi(value());
    } else if (arg == "--response-file") {
      const std::string path = value();
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        Usage("cannot read " + path);
      }
      body.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else if (arg == "--response-bytes") {
      body = SyntheticResponse(std::stoul(value()));
    } else if (arg == "--content-type") {
      content_type = value();
    } else if (arg == "--header") {
      const std::string header = value();
      const auto colon = header.find(':');
      if (colon == std::string::npos) {
        Usage("--header wants NAME:VALUE");
      }
      headers.emplace_back(header.substr(0, colon), header.substr(colon + 1));
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (body.empty()) {
    body = SyntheticResponse(1024);
  }

  // Blocked before the server's threads start, so that sigwait gets them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  perch::http::ServerOptions options;
  options.host = host;
  options.port = port;
  options.handler_threads = threads;
  auto created =
      perch::http::Server::Create(options, perch::Logger::ToStderr(perch::LogLevel::kWarn));
  if (!created.ok()) {
    Usage(created.status().message());
  }
  perch::http::Server& server = **created;
  server.Route(
      "GET", "/v2/health/ready",
      [](perch::http::Request&, perch::http::Response& response) { response.status = 200; });
  server.Route("POST", R"(/v2/models/([A-Za-z0-9_.-]+)(/versions/[0-9]+)?/infer)",
               [&](perch::http::Request&, perch::http::Response& response) {
                 for (const auto& [name, value] : headers) {
                   response.headers.Set(name, value);
                 }
                 response.SetBody(body, content_type);
               });
  if (const perch::Status started = server.Start(); !started.ok()) {
    std::fprintf(stderr, "%s\n", started.message().c_str());
    return 1;
  }
  std::printf("listening on %d\n", server.port());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&stop_signals, &signal);
  server.Stop();
  return 0;
}
