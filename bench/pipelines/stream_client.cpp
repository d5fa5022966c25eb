// The wakeword benchmark's client: N audio streams, each one thread on one
// keep-alive loopback connection sending 80 ms chunks (1,280 INT16 samples
// of noise) as binary REST infer requests with its own stream_id. Paced (one
// chunk per --period-ms, streams spread over the period) or, with
// --period-ms 0, back to back. C++ on plain sockets rather than Python's
// http.client, whose ~0.24 ms of CPU per request would be counted as
// perch's and would take a share of the 2 cores from perch at many streams.
// Prints one JSON line: per-request latencies in microseconds, and how many
// chunks were sent more than two periods late (the stream fell behind).
//
// Usage: bench_pipeline_client --port P [--streams N] [--chunks K]
//                              [--period-ms MS] [--prefix ID]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kSamples = 1280;
constexpr int kDistinctChunks = 16;

[[noreturn]] void Fail(const std::string& error) {
  std::fprintf(stderr, "bench_pipeline_client: %s\n", error.c_str());
  std::exit(1);
}

struct Options {
  int port = 0;
  int streams = 1;
  long chunks = 100;
  double period_ms = 80;
  std::string prefix = "client";
};

std::string RequestFor(const std::string& stream_id, std::mt19937& random, int port) {
  std::uniform_int_distribution<int> sample(-3000, 3000);
  std::string audio(kSamples * sizeof(int16_t), '\0');
  for (int i = 0; i < kSamples; ++i) {
    const auto value = static_cast<int16_t>(sample(random));
    std::memcpy(audio.data() + i * sizeof(int16_t), &value, sizeof(value));
  }
  const std::string header =
      "{\"parameters\":{\"stream_id\":\"" + stream_id +
      "\"},\"inputs\":[{\"name\":\"audio\",\"datatype\":\"INT16\",\"shape\":[1280],"
      "\"parameters\":{\"binary_data_size\":" +
      std::to_string(audio.size()) +
      "}}],\"outputs\":[{\"name\":\"vad\"},{\"name\":\"hey_jarvis\"},{\"name\":\"alexa\"}]}";
  return "POST /v2/models/wakeword/infer HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
         "\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: " +
         std::to_string(header.size()) +
         "\r\nContent-Length: " + std::to_string(header.size() + audio.size()) + "\r\n\r\n" +
         header + audio;
}

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    Fail("socket failed");
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    Fail("cannot connect to 127.0.0.1:" + std::to_string(port));
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Sends `request` and reads one whole response; false unless it is a 200.
bool Exchange(int fd, const std::string& request, std::string& buffer) {
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    sent += static_cast<size_t>(n);
  }
  buffer.clear();
  size_t header_end = std::string::npos;
  size_t total = 0;
  char chunk[16384];
  while (header_end == std::string::npos || buffer.size() < total) {
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      return false;
    }
    buffer.append(chunk, static_cast<size_t>(n));
    if (header_end == std::string::npos) {
      header_end = buffer.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        // Header names are case-insensitive; perch writes "Content-Length".
        size_t at = buffer.find("Content-Length:");
        if (at == std::string::npos || at > header_end) {
          at = buffer.find("content-length:");
        }
        if (at == std::string::npos || at > header_end) {
          return false;
        }
        total = header_end + 4 + std::strtoul(buffer.c_str() + at + 15, nullptr, 10);
      }
    }
  }
  return buffer.compare(0, 12, "HTTP/1.1 200") == 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    const std::string value = argv[i + 1];
    if (arg == "--port") {
      options.port = std::stoi(value);
    } else if (arg == "--streams") {
      options.streams = std::stoi(value);
    } else if (arg == "--chunks") {
      options.chunks = std::stol(value);
    } else if (arg == "--period-ms") {
      options.period_ms = std::stod(value);
    } else if (arg == "--prefix") {
      options.prefix = value;
    } else {
      Fail("unknown option " + arg);
    }
  }
  if (options.port <= 0 || options.streams < 1 || options.chunks < 1 || options.period_ms < 0) {
    Fail(
        "usage: bench_pipeline_client --port P [--streams N] [--chunks K] [--period-ms MS] "
        "[--prefix ID]");
  }
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(options.period_ms));
  std::mutex mutex;
  std::vector<long> micros;
  std::atomic<long> behind{0};
  std::atomic<long> failed{0};
  const auto start = Clock::now() + std::chrono::milliseconds(50);
  std::vector<std::thread> threads;
  for (int s = 0; s < options.streams; ++s) {
    threads.emplace_back([&, s] {
      std::mt19937 random(static_cast<unsigned>(s) + 1);
      const std::string id = options.prefix + "-" + std::to_string(s);
      std::vector<std::string> requests;
      for (int k = 0; k < kDistinctChunks; ++k) {
        requests.push_back(RequestFor(id, random, options.port));
      }
      const int fd = Connect(options.port);
      std::vector<long> mine;
      std::string buffer;
      const auto offset = period * s / options.streams;
      for (long k = 0; k < options.chunks; ++k) {
        const auto due = start + offset + period * k;
        std::this_thread::sleep_until(due);
        const auto sent = Clock::now();
        if (!Exchange(fd, requests[static_cast<size_t>(k % kDistinctChunks)], buffer)) {
          ++failed;
          break;
        }
        const auto done = Clock::now();
        mine.push_back(static_cast<long>(
            std::chrono::duration_cast<std::chrono::microseconds>(done - sent).count()));
        if (period.count() > 0 && done - due > 2 * period) {
          ++behind;
        }
      }
      close(fd);
      const std::lock_guard lock(mutex);
      micros.insert(micros.end(), mine.begin(), mine.end());
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  std::printf("{\"failed\":%ld,\"behind\":%ld,\"micros\":[", failed.load(), behind.load());
  for (size_t i = 0; i < micros.size(); ++i) {
    std::printf("%s%ld", i == 0 ? "" : ",", micros[i]);
  }
  std::printf("]}\n");
  return failed.load() == 0 ? 0 : 1;
}
