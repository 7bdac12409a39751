#pragma once

// The end of a WebSocket upgrade, after the exchange (upstream_exchange.h, in
// ExchangeMode::kUpgrade) relayed the backend's 101: what the tunnel engine takes over. The
// policy checks that run before any upstream connection are in ws_upgrade_checks.h.
//
// Thread: the session's worker.

#include <boost/beast/core/flat_buffer.hpp>
#include <memory>

#include "dataplane/upstream/upstream_connection.h"
#include "dataplane/ws_tunnel/ws_handoff.h"

namespace onedomain::dataplane {

struct CompiledRoute;
namespace stats {
struct RouteCounters;
}  // namespace stats

// The tunnel's inputs: `upstream`, every byte already read past the two heads (taken out
// of `from_client` and `from_upstream`), the route's counters and identity, and its
// WebSocket policy (timeouts, drain) with defaults applied.
std::unique_ptr<WsHandoff> MakeWsHandoff(const CompiledRoute& route, stats::RouteCounters* counters,
                                         std::unique_ptr<UpstreamConnection> upstream,
                                         boost::beast::flat_buffer& from_client,
                                         boost::beast::flat_buffer& from_upstream);

}  // namespace onedomain::dataplane
