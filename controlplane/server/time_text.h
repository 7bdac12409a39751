#pragma once

// A protobuf Timestamp as UTC ISO 8601 to the second ("2026-12-03T10:26:03Z"), or "-" when
// unset: how the admin CLI and the fleet console print times.

#include <google/protobuf/timestamp.pb.h>

#include <ctime>
#include <string>

namespace onedomain::controlplane {

inline std::string TimeText(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0) return "-";
  const std::time_t secs = t.seconds();
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace onedomain::controlplane
