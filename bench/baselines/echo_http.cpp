// Baseline: a bare cpp-httplib server that answers every
// POST /v2/models/<m>[/versions/<v>]/infer with one fixed body, without
// reading the request. It measures what HTTP alone costs, so perch's REST
// latency on a tiny model can be compared with it.
//
// Same server settings as perch's REST front end (src/api/http_server.cpp):
// a pool of 16 threads, keep-alive max count 100000, TCP_NODELAY, 30 s
// read/write timeouts.
//
//   bench_echo_http [--host 127.0.0.1] [--port 0] [--threads 16]
//                   [--response-file FILE | --response-bytes N]
//                   [--content-type T] [--header NAME:VALUE]...
//
// --response-file: the exact body to send (the runner saves perch's own answer
// to the same request, so both servers send the same bytes). Prints
// "listening on PORT" on stdout once bound; SIGTERM ends it.
#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

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

  httplib::Server server;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_keep_alive_max_count(100000);
  server.set_read_timeout(30, 0);
  server.set_write_timeout(30, 0);
  server.set_tcp_nodelay(true);
  server.Get("/v2/health/ready",
             [](const httplib::Request&, httplib::Response& response) { response.status = 200; });
  server.Post(R"(/v2/models/([A-Za-z0-9_.-]+)(/versions/[0-9]+)?/infer)",
              [&](const httplib::Request&, httplib::Response& response) {
                for (const auto& [name, value] : headers) {
                  response.set_header(name, value);
                }
                response.set_content(body, content_type);
              });

  const int bound =
      port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", host.c_str(), port);
    return 1;
  }
  std::printf("listening on %d\n", bound);
  std::fflush(stdout);
  server.listen_after_bind();
  return 0;
}
