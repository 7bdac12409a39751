#pragma once

// A clock that moves only when the test says so: timeouts of hours run in microseconds.

#include <atomic>
#include <chrono>

#include "dataplane/runtime/time_source.h"

namespace onedomain::dataplane::testing {

class ManualTime final : public TimeSource {
 public:
  // Starts at an arbitrary, fixed point (not the epoch: code may subtract durations).
  ManualTime() : now_(Clock::time_point{} + std::chrono::hours(24 * 365)) {}

  Clock::time_point Now() const override { return now_.load(std::memory_order_acquire); }
  void Advance(Clock::duration d) { now_.store(Now() + d, std::memory_order_release); }

 private:
  std::atomic<Clock::time_point> now_;
};

}  // namespace onedomain::dataplane::testing
