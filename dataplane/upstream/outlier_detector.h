#pragma once

// Passive outlier detection for one host on one worker: after N consecutive connect failures
// or 5xx answers the host gets no new requests for the ejection time. Per worker on purpose
// (no state shared between cores); with W workers a dead host is ejected after at most W*N
// failures in total, then by every worker. Pure: the caller passes the time.

#include <cstdint>

#include "dataplane/runtime/time_source.h"
#include "dataplane/upstream/cluster_config.h"

namespace onedomain::dataplane {

class OutlierState {
 public:
  bool Healthy(Clock::time_point now) const { return now >= ejected_until_; }

  // Records a connect failure or a 5xx. Returns true when this failure ejected the host.
  bool RecordFailure(const OutlierConfig& config, Clock::time_point now) {
    if (config.consecutive_failures == 0 || !Healthy(now)) return false;
    if (++consecutive_ < config.consecutive_failures) return false;
    consecutive_ = 0;  // after the ejection the host starts a fresh count
    ejected_until_ = now + config.ejection_time;
    return true;
  }

  void RecordSuccess() { consecutive_ = 0; }

  uint32_t consecutive_failures() const { return consecutive_; }
  Clock::time_point ejected_until() const { return ejected_until_; }

 private:
  uint32_t consecutive_ = 0;
  Clock::time_point ejected_until_{};
};

}  // namespace onedomain::dataplane
