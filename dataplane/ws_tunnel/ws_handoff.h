#pragma once

// What an upgrade hands to the tunnel engine when the 101 passed.
//
// Thread: the session's worker.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/upstream/upstream_connection.h"

namespace onedomain::dataplane {

namespace stats {
struct RouteCounters;
}  // namespace stats

// Everything a tunnel needs, pinned when the 101 passed: the upstream connection (it keeps
// its Host alive), the route's counters and identity, and the policy values. Later config
// changes do not reach it; they never touch established tunnels.
struct WsHandoff {
  std::unique_ptr<UpstreamConnection> upstream;
  std::string from_client;    // client bytes read past the upgrade request
  std::string from_upstream;  // upstream bytes read past the 101
  stats::RouteCounters* counters = nullptr;
  uint32_t route_slot = 0;  // the route's stats slot: its identity across snapshots
  std::chrono::nanoseconds idle_timeout{0};        // 0: none
  std::chrono::nanoseconds keepalive_interval{0};  // 0: none
  std::chrono::nanoseconds drain_grace{0};
  std::chrono::nanoseconds drain_spread{0};
  std::chrono::nanoseconds max_lifetime{0};  // 0: none
  uint32_t max_buffered_bytes = 0;           // 0: the engine's read size
};

}  // namespace onedomain::dataplane
