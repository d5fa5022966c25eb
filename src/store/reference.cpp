#include "store/reference.h"

#include <cctype>

#include "store/digest.h"

namespace perch {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// One path component: alphanumeric runs joined by ".", "_", "__" or "-+".
bool IsValidNameComponent(std::string_view component) {
  if (component.empty() || !IsLowerAlnum(component.front()) || !IsLowerAlnum(component.back())) {
    return false;
  }
  size_t i = 0;
  while (i < component.size()) {
    if (IsLowerAlnum(component[i])) {
      ++i;
      continue;
    }
    const size_t start = i;
    while (i < component.size() && !IsLowerAlnum(component[i])) {
      ++i;
    }
    const std::string_view separator = component.substr(start, i - start);
    const bool dashes = separator.find_first_not_of('-') == std::string_view::npos;
    if (separator != "." && separator != "_" && separator != "__" && !dashes) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool IsValidRepositoryName(std::string_view name) {
  if (name.empty() || name.size() > 255) {
    return false;
  }
  size_t start = 0;
  while (true) {
    const size_t slash = name.find('/', start);
    const std::string_view component = name.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!IsValidNameComponent(component)) {
      return false;
    }
    if (slash == std::string_view::npos) {
      return true;
    }
    start = slash + 1;
  }
}

bool IsValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) {
    return false;
  }
  const auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (!word(tag.front())) {
    return false;
  }
  for (const char c : tag) {
    if (!word(c) && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

bool IsValidRegistryHost(std::string_view host) {
  if (host.empty() || host.size() > 255) {
    return false;
  }
  std::string_view name = host;
  std::string_view port;
  if (host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) {
      return false;
    }
    const std::string_view address = host.substr(1, close - 1);
    if (address.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos) {
      return false;
    }
    const std::string_view rest = host.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') {
      return false;
    }
    port = rest.empty() ? rest : rest.substr(1);
    if (!rest.empty() && port.empty()) {
      return false;
    }
    name = "ipv6";
  } else if (const size_t colon = host.find(':'); colon != std::string_view::npos) {
    name = host.substr(0, colon);
    port = host.substr(colon + 1);
    if (port.empty()) {
      return false;
    }
  }
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos) {
    return false;
  }
  if (name.empty() || name.front() == '-' || name.front() == '.') {
    return false;
  }
  for (const char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

Result<Reference> Reference::Parse(std::string_view text) {
  const std::string shown(text.substr(0, 300));
  Reference reference;
  std::string_view rest = text;
  if (const size_t at = rest.find('@'); at != std::string_view::npos) {
    PERCH_ASSIGN_OR_RETURN(const Digest digest, Digest::Parse(rest.substr(at + 1)));
    reference.digest = digest.str();
    rest = rest.substr(0, at);
  }
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) {
    return InvalidArgument("reference '" + shown +
                           "' has no registry: write HOST[:PORT]/REPOSITORY[:TAG], e.g. "
                           "127.0.0.1:8080/wakeword/hey_jarvis:1");
  }
  const std::string_view host = rest.substr(0, slash);
  if (!IsValidRegistryHost(host)) {
    return InvalidArgument("reference '" + shown + "': '" + std::string(host) +
                           "' is not a registry host[:port]");
  }
  reference.registry = std::string(host);
  std::string_view path = rest.substr(slash + 1);
  if (const size_t colon = path.rfind(':'); colon != std::string_view::npos) {
    const std::string_view tag = path.substr(colon + 1);
    if (!IsValidTag(tag)) {
      return InvalidArgument("reference '" + shown + "': tag '" + std::string(tag) +
                             "' must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}");
    }
    reference.tag = std::string(tag);
    path = path.substr(0, colon);
  } else if (reference.digest.empty()) {
    reference.tag = "latest";
  }
  if (!IsValidRepositoryName(path)) {
    return InvalidArgument("reference '" + shown + "': repository '" + std::string(path) +
                           "' must be lowercase letters and digits in /-separated parts joined "
                           "by '.', '_', '__' or '-'");
  }
  reference.repository = std::string(path);
  return reference;
}

std::string Reference::ToString() const {
  std::string text = registry + "/" + repository;
  if (!tag.empty()) {
    text += ":" + tag;
  }
  if (!digest.empty()) {
    text += "@" + digest;
  }
  return text;
}

}  // namespace perch
