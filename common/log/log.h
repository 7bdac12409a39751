#pragma once

// Process logging: levels, text or JSON lines, to stderr. Thread-safe; one write(2) per
// line so lines from different threads never interleave. Secrets must never be passed in.

#include <string_view>

#include "absl/status/statusor.h"

namespace onedomain::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Sets the minimum level and the output format. Call once at start-up, before threads start.
void Configure(Level min_level, bool json);

// Parses "debug", "info", "warn", "error" (empty → info).
absl::StatusOr<Level> ParseLevel(std::string_view name);

bool Enabled(Level level);

// Writes one line: time, level, component and message (JSON-escaped in JSON mode).
void Write(Level level, std::string_view component, std::string_view message);

inline void Debug(std::string_view component, std::string_view message) {
  if (Enabled(Level::kDebug)) Write(Level::kDebug, component, message);
}
inline void Info(std::string_view component, std::string_view message) {
  if (Enabled(Level::kInfo)) Write(Level::kInfo, component, message);
}
inline void Warn(std::string_view component, std::string_view message) {
  if (Enabled(Level::kWarn)) Write(Level::kWarn, component, message);
}
inline void Error(std::string_view component, std::string_view message) {
  Write(Level::kError, component, message);
}

// Appends `text` to `out` as the contents of a JSON string (no surrounding quotes). Bytes that
// are not valid UTF-8 are written as \u00XX so the output is always valid JSON.
void AppendJsonEscaped(std::string& out, std::string_view text);

}  // namespace onedomain::log
