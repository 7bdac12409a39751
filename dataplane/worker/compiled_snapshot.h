#pragma once

// A snapshot compiled for serving: routes, clusters and listener settings in the form the
// request path reads, plus node-local resources (loaded TLS contexts, resolved addresses).
// Immutable and shared by every worker (shared_ptr<const>); each worker pins it through its
// own WorkerConfig, so requests never touch this object's reference count.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/limits/client_limits.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/upstream/cluster_config.h"
#include "onedomain/v1/listener.pb.h"

namespace onedomain::v1 {
class Snapshot;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

class TlsServerContext;

struct ListenerLimits {
  uint32_t max_header_bytes = 64 * 1024;
  std::chrono::nanoseconds header_timeout{std::chrono::seconds(10)};
  std::chrono::nanoseconds idle_timeout{std::chrono::seconds(60)};
  uint64_t max_body_bytes = 1ull << 30;  // 0: unlimited
  uint32_t max_connections_per_worker = 0;
  uint32_t request_buffer_bytes = 64 * 1024;  // body bytes read before going upstream
  std::chrono::nanoseconds body_timeout{std::chrono::seconds(30)};
};

struct CompiledListener {
  std::string name;
  // Identity of the bound acceptors serving this listener; stays the same across snapshots
  // while name, address, port and TLS-ness stay the same.
  uint32_t slot = 0;
  std::string address;
  ListenerLimits limits;
  std::string forwarded_proto;            // "http" or "https"
  std::shared_ptr<TlsServerContext> tls;  // null: plain HTTP
  ProxyProtocolMode proxy_protocol = ProxyProtocolMode::kOff;
  std::chrono::nanoseconds proxy_header_timeout{std::chrono::seconds(5)};
  v1::Listener source;
};

struct CompiledSnapshot {
  std::shared_ptr<const v1::Snapshot> source;
  uint64_t version = 0;
  std::vector<std::shared_ptr<const CompiledListener>> listeners;
  std::vector<std::shared_ptr<const CompiledCluster>> clusters;
  std::shared_ptr<const RouteTable> routes;
  // Client limits (dataplane/limits/): node-wide settings, and per route index the values in
  // force. `route_limits` is empty when no route has any limit (the request path skips them).
  NodeClientLimits client_limits;
  std::vector<RouteClientLimits> route_limits;
};

}  // namespace onedomain::dataplane
