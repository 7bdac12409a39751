// Flag values for the bench tools (ws_load, ws_echo_server, ws_h2_load): numbers and
// durations in seconds. A bad value goes to the tool's own onedomain_bench::Usage, which prints why
// and the tool's usage, and exits 2.
#pragma once

#include <charconv>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>

namespace onedomain_bench {

// Defined by each tool: prints `why` and its usage, exits 2.
[[noreturn]] void Usage(const std::string& why);

template <class T>
T ParseNumber(std::string_view flag, std::string_view v) {
  T out{};
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc{} || ptr != v.data() + v.size()) {
    Usage(std::string(flag) + ": not a number: '" + std::string(v) + "'");
  }
  return out;
}

// Seconds, fractions allowed, 0 to a day.
inline double ParseSeconds(std::string_view flag, std::string_view v) {
  const std::string s(v);
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !(d >= 0) || d > 86400) {
    Usage(std::string(flag) + ": not a duration in seconds: '" + s + "'");
  }
  return d;
}

}  // namespace onedomain_bench
