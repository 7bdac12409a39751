#pragma once

// Small string helpers over std::string_view. Debian's Abseil is built with its own
// absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), which does not convert from
// std::string_view; Beast and our code speak std::string_view, so we keep absl string
// utilities out and use these instead. absl::Status stays for config and control-plane errors.

#include <charconv>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"

namespace onedomain::str {

namespace internal {
inline void Append(std::string& out, std::string_view s) { out.append(s); }
inline void Append(std::string& out, const char* s) { out.append(s); }
inline void Append(std::string& out, const std::string& s) { out.append(s); }
// absl::Status::message() returns Abseil's own string_view.
inline void Append(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
inline void Append(std::string& out, char c) { out.push_back(c); }
inline void Append(std::string& out, bool b) { out.append(b ? "true" : "false"); }
template <std::integral T>
requires(!std::same_as<T, char> && !std::same_as<T, bool>) void Append(std::string& out, T v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, static_cast<size_t>(end - buf));
}
void Append(std::string& out, double v);
}  // namespace internal

// Concatenates strings, string views, characters, integers and doubles.
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (internal::Append(out, args), ...);
  return out;
}

template <typename... Args>
void Append(std::string& out, const Args&... args) {
  (internal::Append(out, args), ...);
}

template <typename Range>
std::string Join(const Range& parts, std::string_view sep) {
  std::string out;
  bool first = true;
  for (const auto& p : parts) {
    if (!first) out.append(sep);
    first = false;
    internal::Append(out, p);
  }
  return out;
}

// Splits on every `sep`; keeps empty pieces.
std::vector<std::string_view> Split(std::string_view text, char sep);

std::string_view StripWhitespace(std::string_view s);  // spaces and tabs (HTTP OWS) and CR/LF
std::string ToLower(std::string_view s);
std::string ToUpper(std::string_view s);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

inline bool ConsumePrefix(std::string_view& s, std::string_view prefix) {
  if (!s.starts_with(prefix)) return false;
  s.remove_prefix(prefix.size());
  return true;
}
inline bool ConsumeSuffix(std::string_view& s, std::string_view suffix) {
  if (!s.ends_with(suffix)) return false;
  s.remove_suffix(suffix.size());
  return true;
}

inline bool StartsWith(std::string_view s, std::string_view p) { return s.starts_with(p); }
inline bool EndsWith(std::string_view s, std::string_view p) { return s.ends_with(p); }
inline std::string_view StripPrefix(std::string_view s, std::string_view p) {
  ConsumePrefix(s, p);
  return s;
}
inline std::string_view StripSuffix(std::string_view s, std::string_view p) {
  ConsumeSuffix(s, p);
  return s;
}

// Whole-string decimal parse; false on any stray character or overflow.
template <std::integral T>
bool ParseInt(std::string_view s, T& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}
bool ParseDouble(std::string_view s, double& out);

inline bool IsDigit(char c) { return c >= '0' && c <= '9'; }
inline bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool IsAlnum(char c) { return IsDigit(c) || IsAlpha(c); }

// Text a peer chose (node ids, NACK messages, pod names), made safe for a log line: printable
// ASCII is kept, a backslash becomes "\\", every other byte "\xNN"; beyond `max_bytes` of
// input the rest is replaced by "...(N bytes)". A peer cannot forge lines or colour a
// terminal through it.
std::string EscapeForLog(std::string_view text, size_t max_bytes = 256);

}  // namespace onedomain::str
