#include "common/log/log.h"
#include "common/strings/strings.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <string>

namespace onedomain::log {
namespace {

std::atomic<int> g_min_level{static_cast<int>(Level::kInfo)};
std::atomic<bool> g_json{false};

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

void AppendTimestamp(std::string& out) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  out.append(buf, n);
  char frac[8];
  std::snprintf(frac, sizeof(frac), ".%03dZ", static_cast<int>(millis));
  out.append(frac);
}

}  // namespace

void Configure(Level min_level, bool json) {
  g_min_level.store(static_cast<int>(min_level), std::memory_order_relaxed);
  g_json.store(json, std::memory_order_relaxed);
}

absl::StatusOr<Level> ParseLevel(std::string_view name) {
  const std::string lower = str::ToLower(name);
  if (lower.empty() || lower == "info") return Level::kInfo;
  if (lower == "debug") return Level::kDebug;
  if (lower == "warn" || lower == "warning") return Level::kWarn;
  if (lower == "error") return Level::kError;
  return absl::InvalidArgumentError(
      str::Cat("unknown log level '", name, "' (use debug, info, warn or error)"));
}

bool Enabled(Level level) {
  return static_cast<int>(level) >= g_min_level.load(std::memory_order_relaxed);
}

void AppendJsonEscaped(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      default:
        break;
    }
    if (c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      continue;
    }
    // Copy a well-formed UTF-8 sequence as is; escape a stray byte.
    size_t len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool valid = len != 0 && i + len <= text.size();
    for (size_t k = 1; valid && k < len; ++k) {
      valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    }
    if (valid) {
      out.append(text.substr(i, len));
      i += len - 1;
    } else {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
}

void Write(Level level, std::string_view component, std::string_view message) {
  std::string line;
  line.reserve(64 + message.size());
  if (g_json.load(std::memory_order_relaxed)) {
    line += "{\"time\":\"";
    AppendTimestamp(line);
    str::Append(line, "\",\"level\":\"", LevelName(level), "\",\"component\":\"");
    AppendJsonEscaped(line, component);
    line += "\",\"msg\":\"";
    AppendJsonEscaped(line, message);
    line += "\"}\n";
  } else {
    AppendTimestamp(line);
    str::Append(line, " ", LevelName(level), " [", component, "] ", message, "\n");
  }
  // One write per line: atomic with respect to other threads' lines for pipes and files
  // opened O_APPEND. A failed write to stderr has nowhere better to be reported.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace onedomain::log
