#pragma once

// Compiled routes of one snapshot: ordered, first match wins, immutable once built and shared
// by every worker. Matching never allocates.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace onedomain::v1 {
class Snapshot;
class WebSocketPolicy;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

class CompiledCookiePolicy;

struct CompiledRoute {
  std::string name;
  uint32_t index = 0;  // position in the table

  // Match.
  bool exact = false;          // exact path instead of prefix
  std::string path;            // prefix or exact path
  std::string host;            // lower case, without "*."; empty: any host
  bool host_wildcard = false;  // "*.example.com": any subdomain of host

  // Action.
  uint32_t cluster_index = 0;
  std::string cluster_name;
  bool websocket = false;
  std::optional<uint64_t> max_body_bytes;       // unset: the listener's; 0: unlimited
  std::chrono::nanoseconds request_timeout{0};  // 0: none
  std::string host_rewrite;
  std::string prefix_rewrite;
  // Cookie policy in force on this route (the route's own or the global one); null when no
  // policy applies, so Cookie and Set-Cookie pass byte for byte.
  std::shared_ptr<const CompiledCookiePolicy> cookie_policy;
  // The WebSocket policy with the route's overrides merged in (used by the upgrade path).
  std::shared_ptr<const v1::WebSocketPolicy> websocket_policy;

  // Slot of this route's counters in the stats catalog (stable across snapshots by name).
  uint32_t stats_slot = 0;
};

class RouteTable {
 public:
  RouteTable() = default;
  explicit RouteTable(std::vector<CompiledRoute> routes) : routes_(std::move(routes)) {}

  // First route whose host and path match, or null. `host` is the Host header as sent
  // (port allowed); `path` excludes the query.
  const CompiledRoute* Match(std::string_view host, std::string_view path) const;

  const std::vector<CompiledRoute>& routes() const { return routes_; }

 private:
  std::vector<CompiledRoute> routes_;
};

// "example.com:8080" -> "example.com", "[::1]:80" -> "::1".
std::string_view HostWithoutPort(std::string_view host);

// The path of a request-target: origin-form up to '?', absolute-form's path, or empty for
// anything else (asterisk-form, authority-form, garbage).
std::string_view PathOfTarget(std::string_view target);

// True when `host` (without port) matches the route's host pattern, case-insensitively.
bool HostMatches(const CompiledRoute& route, std::string_view host);

}  // namespace onedomain::dataplane
