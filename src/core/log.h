// Logging facade: levels, a component tag on every line, lazy formatting.
// A Logger is a cheap value; copies share the sink. Thread-safe.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace perch {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };

std::string_view ToString(LogLevel level);
std::optional<LogLevel> LogLevelFromString(std::string_view name);

class Logger {
 public:
  // A logger writing to stderr at `level`, tagged `component`.
  static Logger ToStderr(LogLevel level, std::string component = "perch");

  // The same sink and level, another tag: what each component is handed.
  Logger ForComponent(std::string component) const;

  template <typename... Args>
  void Debug(spdlog::format_string_t<Args...> format, Args&&... args) const {
    logger_->debug(format, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void Info(spdlog::format_string_t<Args...> format, Args&&... args) const {
    logger_->info(format, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void Warn(spdlog::format_string_t<Args...> format, Args&&... args) const {
    logger_->warn(format, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void Error(spdlog::format_string_t<Args...> format, Args&&... args) const {
    logger_->error(format, std::forward<Args>(args)...);
  }

 private:
  explicit Logger(std::shared_ptr<spdlog::logger> logger) : logger_(std::move(logger)) {}

  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace perch
