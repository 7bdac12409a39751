#pragma once

// Where the data plane reads the time. Every timeout, deadline and duration on a worker reads
// its dispatcher's time source instead of the clock, so unit tests drive timeouts with a
// manual clock instead of waiting for them.
//
// Thread: Now() may be called from any thread; a test's manual clock is advanced by the test.

#include <chrono>

namespace onedomain::dataplane {

using Clock = std::chrono::steady_clock;

class TimeSource {
 public:
  virtual ~TimeSource() = default;
  virtual Clock::time_point Now() const = 0;
};

// The monotonic clock; what every worker uses outside tests.
TimeSource& RealTime();

}  // namespace onedomain::dataplane
