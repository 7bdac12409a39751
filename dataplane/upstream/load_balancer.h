#pragma once

// Picks a healthy host for a request, per worker: round-robin, or least-request (fewest in
// flight on this worker, ties in round-robin order). Pure apart from its cursor.

#include <cstddef>
#include <span>

#include "dataplane/runtime/deadline.h"
#include "dataplane/upstream/cluster_config.h"

namespace onedomain::dataplane {

class Host;

class LoadBalancer {
 public:
  // A healthy host other than `exclude`, or null when there is none. `exclude` lets a retry
  // avoid the host that just failed.
  Host* Pick(LbPolicy policy, std::span<Host* const> hosts, Clock::time_point now,
             const Host* exclude = nullptr);

 private:
  size_t cursor_ = 0;
};

}  // namespace onedomain::dataplane
