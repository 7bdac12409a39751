#pragma once

// The client-limit phases of a connection and its requests (issue 20), pure but for the
// worker's tables: the client address decided once per connection, the connection cap, and
// per request the rate buckets and WebSocket caps, answered with 429 + Retry-After by
// local_reply. The async part (reading a PROXY header) is proxy_header_io.cc.
//
// Thread: one worker (the node's concurrency table is shared, locked per shard).

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/proxy_error.h"
#include "dataplane/limits/client_address.h"
#include "dataplane/limits/limit_tables.h"

namespace onedomain::dataplane {

class AnyStream;
class Worker;
class WorkerConfig;
struct CompiledRoute;
struct NodeClientLimits;

namespace stats {
struct RouteCounters;
}  // namespace stats

// One connection's client: its address, decided once, and the counts it holds. Lives on the
// connection's frame (for a WebSocket, until the tunnel ends).
struct ClientState {
  ClientAddress address;
  std::string text;  // address as text: the access log's client, X-Forwarded-For
  // False while the peer is a trusted proxy whose first request has not been read yet.
  bool decided = false;
  // X-Forwarded-For upstream is exactly `text` (trusted_proxies set or a PROXY listener),
  // instead of the client's hops followed by `text`.
  bool replace_forwarded_for = false;
  ConcurrencyLease connection;
  ConcurrencyLease websocket_by_client;
  ConcurrencyLease websocket_by_cookie;
};

// The socket peer as the client (before any PROXY header or X-Forwarded-For).
bool InitClientFromPeer(int fd, ClientState& client);

// At accept (proxy_header_io.cc): reads the PROXY header when listener `slot` takes one
// (under its proxy_header_timeout from `accepted`), consuming exactly its bytes; then, unless
// the peer is a trusted proxy whose first request decides, AdmitConnection. False: close the
// connection now, without an answer (counted).
boost::asio::awaitable<bool> DecideClientAtAccept(AnyStream& stream, Worker& worker, uint32_t slot,
                                                  std::chrono::steady_clock::time_point accepted,
                                                  ClientState& client);

// Once the address is final (`client.decided`): counts the connection against
// max_connections_per_client. False when over it (counted; the caller closes).
bool AdmitConnection(ClientState& client, const NodeClientLimits& limits, Worker& worker);

// At the first request of a connection from a trusted proxy: the client from
// X-Forwarded-For, then AdmitConnection. False: close the connection.
bool DecideClientFromForwardedFor(ClientState& client, const RequestHead& head,
                                  const NodeClientLimits& limits, Worker& worker);

// The route's request rate; for an upgrade (after CheckUpgrade passed) also its upgrade
// rate and WebSocket caps, whose counts are taken into `client` (release them with
// ReleaseWebSocketCounts when no 101 followed). A refusal is counted on `counters`.
std::optional<ProxyError> CheckClientLimits(ClientState& client, const WorkerConfig& cfg,
                                            const CompiledRoute& route, const RequestHead& head,
                                            bool upgrade, Worker& worker,
                                            stats::RouteCounters& counters);
void ReleaseWebSocketCounts(ClientState& client);

// The value of the first cookie named `name` (or starting with it when `prefix`); empty when
// none.
std::string_view FindCookieValue(const RequestHead& head, std::string_view name, bool prefix);

}  // namespace onedomain::dataplane
