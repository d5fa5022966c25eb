#include "http/message.h"

#include <algorithm>
#include <cctype>

namespace perch::http {
namespace {

bool SameName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::optional<std::string_view> Headers::Get(std::string_view name) const {
  for (const auto& [field, value] : fields_) {
    if (SameName(field, name)) {
      return std::string_view(value);
    }
  }
  return std::nullopt;
}

std::string Headers::Value(std::string_view name) const {
  return std::string(Get(name).value_or(std::string_view()));
}

void Headers::Set(std::string_view name, std::string value) {
  Remove(name);
  Add(name, std::move(value));
}

void Headers::Add(std::string_view name, std::string value) {
  fields_.emplace_back(std::string(name), std::move(value));
}

void Headers::Remove(std::string_view name) {
  std::erase_if(fields_, [name](const auto& field) { return SameName(field.first, name); });
}

std::optional<std::string_view> Request::param(std::string_view key) const {
  const auto found = query.find(std::string(key));
  if (found == query.end()) {
    return std::nullopt;
  }
  return std::string_view(found->second);
}

}  // namespace perch::http
