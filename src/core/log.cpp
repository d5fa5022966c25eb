#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/enum_names.h"

namespace perch {
namespace {

constexpr EnumNames<LogLevel, 5> kLevelNames{{
    {LogLevel::kDebug, "debug"},
    {LogLevel::kInfo, "info"},
    {LogLevel::kWarn, "warn"},
    {LogLevel::kError, "error"},
    {LogLevel::kOff, "off"},
}};

spdlog::level::level_enum ToSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
    case LogLevel::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

}  // namespace

std::string_view ToString(LogLevel level) { return EnumToString(kLevelNames, level); }

std::optional<LogLevel> LogLevelFromString(std::string_view name) {
  return EnumFromString(kLevelNames, name);
}

Logger Logger::ToStderr(LogLevel level, std::string component) {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(std::move(component), std::move(sink));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");
  logger->set_level(ToSpdlog(level));
  logger->flush_on(spdlog::level::warn);
  return Logger(std::move(logger));
}

Logger Logger::ForComponent(std::string component) const {
  auto logger = logger_->clone(std::move(component));
  return Logger(std::move(logger));
}

}  // namespace perch
