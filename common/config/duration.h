#pragma once

// google.protobuf.Duration <-> std::chrono, with a default for unset fields.

#include <chrono>

#include "google/protobuf/duration.pb.h"

namespace onedomain::config {

inline std::chrono::nanoseconds ToChrono(const google::protobuf::Duration& d) {
  return std::chrono::seconds(d.seconds()) + std::chrono::nanoseconds(d.nanos());
}

// The duration of `field` when `has` is true, else `fallback`. Use as
// DurationOr(msg.has_x(), msg.x(), defaults::kX).
template <typename Rep, typename Period>
std::chrono::nanoseconds DurationOr(bool has, const google::protobuf::Duration& field,
                                    std::chrono::duration<Rep, Period> fallback) {
  return has ? ToChrono(field) : std::chrono::duration_cast<std::chrono::nanoseconds>(fallback);
}

}  // namespace onedomain::config
