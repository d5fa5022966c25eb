#include "http/decompress.h"

#include <brotli/decode.h>
#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>
#include <vector>

namespace perch::http {
namespace {

constexpr size_t kChunk = 64 << 10;

enum class Coding { kIdentity, kGzip, kDeflate, kBrotli, kUnknown };

Coding CodingFor(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower.empty() || lower == "identity") {
    return Coding::kIdentity;
  }
  if (lower == "gzip" || lower == "x-gzip") {
    return Coding::kGzip;
  }
  if (lower == "deflate") {
    return Coding::kDeflate;
  }
  if (lower == "br") {
    return Coding::kBrotli;
  }
  return Coding::kUnknown;
}

// The codings of a Content-Encoding value, in the order they were applied.
std::vector<std::string_view> SplitCodings(std::string_view value) {
  std::vector<std::string_view> codings;
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view coding = value.substr(0, comma);
    value = comma == value.npos ? std::string_view() : value.substr(comma + 1);
    while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) {
      coding.remove_prefix(1);
    }
    while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) {
      coding.remove_suffix(1);
    }
    codings.push_back(coding);
  }
  return codings;
}

Status TooLarge(size_t limit) {
  return ResourceExhausted(
      fmt::format("the request body decompresses to more than the limit of {} bytes", limit));
}

// window_bits: 15 + 16 for gzip, 15 for zlib-wrapped deflate, -15 for raw deflate.
Result<std::string> Inflate(std::string_view input, int window_bits, size_t limit,
                            std::string_view name) {
  z_stream stream{};
  if (inflateInit2(&stream, window_bits) != Z_OK) {
    return Internal("zlib could not be initialised");
  }
  const std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&stream, inflateEnd);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  std::string out;
  std::array<char, kChunk> chunk{};
  int result = Z_OK;
  while (result != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(chunk.data());
    stream.avail_out = static_cast<uInt>(chunk.size());
    result = inflate(&stream, Z_NO_FLUSH);
    if (result != Z_OK && result != Z_STREAM_END) {
      return InvalidArgument(
          fmt::format("the request body is not valid {} data (Content-Encoding)", name));
    }
    const size_t produced = chunk.size() - stream.avail_out;
    if (produced > limit - out.size()) {
      return TooLarge(limit);
    }
    out.append(chunk.data(), produced);
    if (result == Z_OK && produced == 0 && stream.avail_in == 0) {
      return InvalidArgument(fmt::format("the request body's {} data is truncated", name));
    }
  }
  return out;
}

Result<std::string> Unbrotli(std::string_view input, size_t limit) {
  const std::unique_ptr<BrotliDecoderState, void (*)(BrotliDecoderState*)> state(
      BrotliDecoderCreateInstance(nullptr, nullptr, nullptr), BrotliDecoderDestroyInstance);
  if (!state) {
    return Internal("brotli could not be initialised");
  }
  const auto* next_in = reinterpret_cast<const uint8_t*>(input.data());
  size_t available_in = input.size();
  std::string out;
  std::array<char, kChunk> chunk{};
  for (;;) {
    auto* next_out = reinterpret_cast<uint8_t*>(chunk.data());
    size_t available_out = chunk.size();
    const BrotliDecoderResult result = BrotliDecoderDecompressStream(
        state.get(), &available_in, &next_in, &available_out, &next_out, nullptr);
    const size_t produced = chunk.size() - available_out;
    if (produced > limit - out.size()) {
      return TooLarge(limit);
    }
    out.append(chunk.data(), produced);
    if (result == BROTLI_DECODER_RESULT_SUCCESS) {
      return out;
    }
    if (result == BROTLI_DECODER_RESULT_ERROR || result == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) {
      return InvalidArgument("the request body is not valid br data (Content-Encoding)");
    }
  }
}

}  // namespace

bool SupportedEncoding(std::string_view content_encoding) {
  for (const std::string_view coding : SplitCodings(content_encoding)) {
    if (CodingFor(coding) == Coding::kUnknown) {
      return false;
    }
  }
  return true;
}

Result<std::string> Decompress(std::string_view content_encoding, std::string body, size_t limit) {
  const std::vector<std::string_view> codings = SplitCodings(content_encoding);
  for (auto coding = codings.rbegin(); coding != codings.rend(); ++coding) {
    Result<std::string> decoded = std::string();
    switch (CodingFor(*coding)) {
      case Coding::kIdentity:
        continue;
      case Coding::kGzip:
        decoded = Inflate(body, 15 + 16, limit, "gzip");
        break;
      case Coding::kDeflate:
        // RFC 9110 says zlib-wrapped; some clients send raw deflate.
        decoded = Inflate(body, 15, limit, "deflate");
        if (!decoded.ok() && decoded.status().code() == StatusCode::kInvalidArgument) {
          decoded = Inflate(body, -15, limit, "deflate");
        }
        break;
      case Coding::kBrotli:
        decoded = Unbrotli(body, limit);
        break;
      case Coding::kUnknown:
        return InvalidArgument(fmt::format(
            "unsupported Content-Encoding '{}': send gzip, deflate, br or none", *coding));
    }
    if (!decoded.ok()) {
      return decoded.status();
    }
    body = std::move(decoded).value();
  }
  if (body.size() > limit) {
    return TooLarge(limit);
  }
  return body;
}

}  // namespace perch::http
