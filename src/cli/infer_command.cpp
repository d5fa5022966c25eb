// `perch infer`: one request to a running agent over REST, inputs from
// .npy files (sent as binary tensors) or .json files, outputs printed as JSON.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/registry_flags.h"
#include "core/status.h"
#include "http/client.h"
#include "http/errors.h"
#include "tensor/npy.h"
#include "tensor/tensor.h"

namespace perch::cli {
namespace {

using nlohmann::json;

struct InferOptions {
  std::string model;
  std::vector<std::string> inputs;  // NAME=FILE
  std::vector<std::string> outputs;
  std::vector<std::string> parameters;  // NAME=VALUE
  std::string url = "http://127.0.0.1:8000";
  std::string version;
  std::string ca_file;
  std::string api_token;
  double timeout_seconds = 60;
};

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound(fmt::format("cannot open {}", path));
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The shape of a nested JSON array; InvalidArgument if it is ragged.
Result<Shape> ShapeOfNested(const json& value) {
  if (!value.is_array()) {
    return Shape{};
  }
  if (value.empty()) {
    return Shape{0};
  }
  PERCH_ASSIGN_OR_RETURN(Shape inner, ShapeOfNested(value.front()));
  for (const json& child : value) {
    PERCH_ASSIGN_OR_RETURN(const Shape other, ShapeOfNested(child));
    if (other != inner) {
      return InvalidArgument("the nested array is ragged: its rows differ in shape");
    }
  }
  inner.insert(inner.begin(), static_cast<int64_t>(value.size()));
  return inner;
}

class Client {
 public:
  // InvalidArgument for an unreadable --ca-file.
  static Result<std::unique_ptr<Client>> Create(const InferOptions& options) {
    const auto timeout = std::chrono::milliseconds(
        static_cast<int64_t>(std::max(options.timeout_seconds * 1000, 1.0)));
    PERCH_ASSIGN_OR_RETURN(auto http, http::Client::Create(http::ClientOptions{
                                          .ca_file = options.ca_file,
                                          .connect_timeout = timeout,
                                          .read_timeout = timeout,
                                      }));
    return std::make_unique<Client>(options, std::move(http));
  }

  Client(const InferOptions& options, std::unique_ptr<http::Client> http)
      : options_(options), http_(std::move(http)) {
    base_ = options.url;
    while (base_.ends_with('/')) {
      base_.pop_back();
    }
  }

  std::string ModelUrl() const {
    std::string url = base_ + "/v2/models/" + options_.model;
    if (!options_.version.empty()) {
      url += "/versions/" + options_.version;
    }
    return url;
  }

  // The body of a 200 answer, or the server's error.
  Result<std::string> Call(http::ClientRequest request) const {
    if (!options_.api_token.empty()) {
      request.headers.Set("Authorization", "Bearer " + options_.api_token);
    }
    // A transport failure's message names the URL and the cause.
    PERCH_ASSIGN_OR_RETURN(http::ClientResponse result, http_->Send(request));
    if (result.status != 200) {
      const auto body = json::parse(result.body, nullptr, false);
      const std::string message =
          body.is_object() && body.contains("error") && body["error"].is_string()
              ? body["error"].get<std::string>()
              : result.body.substr(0, 500);
      return Status(http::StatusCodeForHttp(result.status),
                    fmt::format("HTTP {}: {}", result.status, message));
    }
    return std::move(result.body);
  }

  Result<json> Metadata() {
    http::ClientRequest request;
    request.url = ModelUrl();
    PERCH_ASSIGN_OR_RETURN(const std::string body, Call(request));
    return ParseAnswer(body);
  }

  Result<std::string> Infer(std::string body, size_t json_size) {
    http::ClientRequest request;
    request.method = "POST";
    request.url = ModelUrl() + "/infer";
    if (json_size != body.size()) {
      request.headers.Set("Inference-Header-Content-Length", std::to_string(json_size));
    }
    request.headers.Set("Content-Type",
                        json_size != body.size() ? "application/octet-stream" : "application/json");
    request.body = std::move(body);
    return Call(request);
  }

  Result<json> ParseAnswer(const std::string& body) const {
    json value = json::parse(body, nullptr, false);
    if (value.is_discarded()) {
      return Internal(fmt::format("{} answered something that is not JSON: {}", options_.url,
                                  body.substr(0, 200)));
    }
    return value;
  }

 private:
  const InferOptions& options_;
  const std::unique_ptr<http::Client> http_;
  std::string base_;  // the URL without a trailing '/'
};

// Adds the input `name` from a .json file: a full tensor object, or a bare
// nested array whose datatype comes from the model's metadata.
Status AddJsonInput(const std::string& name, const std::string& text, Client& client,
                    json& request) {
  const json value = json::parse(text, nullptr, false);
  if (value.is_discarded()) {
    return InvalidArgument(fmt::format("the file for input '{}' is not valid JSON", name));
  }
  if (value.is_object()) {
    json tensor = value;
    tensor["name"] = name;
    request["inputs"].push_back(std::move(tensor));
    return Status::Ok();
  }
  PERCH_ASSIGN_OR_RETURN(const json metadata, client.Metadata());
  std::string datatype;
  for (const auto& input : metadata.value("inputs", json::array())) {
    if (input.value("name", "") == name) {
      datatype = input.value("datatype", "");
    }
  }
  if (datatype.empty()) {
    return InvalidArgument(fmt::format("model has no input '{}'", name));
  }
  PERCH_ASSIGN_OR_RETURN(const Shape shape, ShapeOfNested(value));
  request["inputs"].push_back(
      {{"name", name}, {"datatype", datatype}, {"shape", shape}, {"data", value}});
  return Status::Ok();
}

// The request's "parameters" from --parameter NAME=VALUE: VALUE as JSON when
// it is a number, a boolean or a quoted string, otherwise as the text it is
// (so stream_id=kitchen needs no quotes). The agent checks the limits.
Result<json> Parameters(const std::vector<std::string>& specs) {
  json parameters = json::object();
  for (const auto& spec : specs) {
    const auto equals = spec.find('=');
    if (equals == std::string::npos || equals == 0) {
      return InvalidArgument(fmt::format("--parameter takes NAME=VALUE, not \"{}\"", spec));
    }
    const std::string name = spec.substr(0, equals);
    const std::string text = spec.substr(equals + 1);
    json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded() || !(value.is_number() || value.is_boolean() || value.is_string())) {
      value = text;
    }
    parameters[name] = std::move(value);
  }
  return parameters;
}

Result<json> Run(const InferOptions& options) {
  PERCH_ASSIGN_OR_RETURN(const std::unique_ptr<Client> made, Client::Create(options));
  Client& client = *made;
  json request = {{"inputs", json::array()}};
  if (!options.parameters.empty()) {
    PERCH_ASSIGN_OR_RETURN(request["parameters"], Parameters(options.parameters));
  }
  std::string binary;
  for (const auto& spec : options.inputs) {
    const auto equals = spec.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == spec.size()) {
      return InvalidArgument(fmt::format("--input takes NAME=FILE, not \"{}\"", spec));
    }
    const std::string name = spec.substr(0, equals);
    const std::string path = spec.substr(equals + 1);
    PERCH_ASSIGN_OR_RETURN(const std::string content, ReadFile(path));
    if (path.ends_with(".npy")) {
      auto tensor = DecodeNpy(content, name);
      if (!tensor.ok()) {
        return InvalidArgument(fmt::format("{}: {}", path, tensor.status().message()));
      }
      request["inputs"].push_back({{"name", name},
                                   {"datatype", ToString(tensor->datatype)},
                                   {"shape", tensor->shape},
                                   {"parameters", {{"binary_data_size", tensor->data.size()}}}});
      binary += tensor->data;
    } else if (path.ends_with(".json")) {
      PERCH_RETURN_IF_ERROR(AddJsonInput(name, content, client, request));
    } else {
      return InvalidArgument(fmt::format("{}: inputs are .npy or .json files", path));
    }
  }
  for (const auto& name : options.outputs) {
    request["outputs"].push_back({{"name", name}});
  }
  // Text from the command line may not be UTF-8: replaced, not thrown on.
  std::string body = request.dump(-1, ' ', false, json::error_handler_t::replace);
  const size_t json_size = body.size();
  body += binary;
  PERCH_ASSIGN_OR_RETURN(const std::string answer, client.Infer(std::move(body), json_size));
  return client.ParseAnswer(answer);
}

}  // namespace

CommandRunner AddInferCommand(CLI::App& app) {
  auto options = std::make_shared<InferOptions>();
  app.add_option("model", options->model, "Model name")->required();
  app.add_option("--input,-i", options->inputs,
                 "NAME=FILE, once per input; FILE is .npy, or .json holding a nested array or "
                 "{\"datatype\", \"shape\", \"data\"}")
      ->required();
  app.add_option("--output,-o", options->outputs, "Only these outputs (default: all)");
  app.add_option("--parameter", options->parameters,
                 "NAME=VALUE, a request parameter (repeatable), e.g. stream_id=kitchen for a "
                 "pipeline's stream; VALUE is a number, true, false or text");
  app.add_option("--url", options->url, "The agent's REST address")
      ->envname("PERCH_URL")
      ->capture_default_str();
  app.add_option("--model-version", options->version, "Model version (default: the newest)");
  AddCaFileFlag(app, options->ca_file);
  AddApiTokenFlag(app, options->api_token);
  app.add_option("--timeout", options->timeout_seconds,
                 "Seconds to wait for the connection, and then for each next byte of the answer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  return [options] {
    const auto result = Run(*options);
    if (!result.ok()) {
      std::fprintf(stderr, "perch infer: %s\n", result.status().message().c_str());
      return 1;
    }
    std::printf("%s\n", result->dump(2).c_str());
    return 0;
  };
}

}  // namespace perch::cli
