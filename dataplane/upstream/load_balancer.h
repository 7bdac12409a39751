#pragma once

// Picks a healthy host for a request, per worker: round-robin, or least-request (fewest in
// flight on this worker, ties in round-robin order). Pure apart from its cursor.

#include <cstddef>
#include <span>

#include "dataplane/runtime/time_source.h"
#include "dataplane/upstream/cluster_config.h"

namespace onedomain::dataplane {

class Host;

class LoadBalancer {
 public:
  // A healthy host other than `exclude`, or null when there is none. `exclude` lets a retry
  // avoid the host that just failed. With fewer than `panic_threshold_percent` of the hosts
  // healthy (0: never), health is ignored and every host is a candidate ("panic").
  Host* Pick(LbPolicy policy, std::span<Host* const> hosts, Clock::time_point now,
             const Host* exclude = nullptr, uint32_t panic_threshold_percent = 0);

 private:
  size_t cursor_ = 0;
};

}  // namespace onedomain::dataplane
