#pragma once

// Client limits compiled from a snapshot: the node-wide settings, and per route the values
// in force (the route's overrides over the snapshot's) with the scope their state is kept
// under (0: the snapshot-wide value, shared by every route that inherits it).
//
// Thread: immutable once compiled; shared by every worker.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "dataplane/limits/client_address.h"
#include "dataplane/limits/limit_tables.h"
#include "dataplane/limits/proxy_protocol.h"

namespace onedomain::v1 {
class Snapshot;
class Route;
class WebSocketPolicy;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

inline constexpr uint32_t kDefaultLimitTableEntries = 65536;

struct NodeClientLimits {
  uint32_t max_connections_per_client = 0;  // 0: none
  uint32_t table_entries = kDefaultLimitTableEntries;
  TrustedProxies trusted_proxies;
};

struct RouteClientLimits {
  uint32_t max_websockets_per_client = 0;
  uint32_t websockets_per_client_scope = 0;
  uint32_t max_websockets_per_cookie = 0;
  uint32_t websockets_per_cookie_scope = 0;
  std::string cookie_name;  // without a trailing '*'
  bool cookie_prefix = false;
  RateLimit upgrade_rate;
  uint32_t upgrade_rate_scope = 0;
  RateLimit request_rate;
  uint32_t request_rate_scope = 0;
};

// The snapshot's node-wide settings (the snapshot has been validated).
absl::StatusOr<NodeClientLimits> CompileNodeClientLimits(const v1::Snapshot& snapshot);

// `route`'s limits; `merged_ws` is its WebSocket policy with overrides merged (for
// required_cookie); `scope` identifies the route's own state (non-zero, stable by name).
RouteClientLimits CompileRouteClientLimits(const v1::Snapshot& snapshot, const v1::Route& route,
                                           const v1::WebSocketPolicy* merged_ws, uint32_t scope);

}  // namespace onedomain::dataplane
