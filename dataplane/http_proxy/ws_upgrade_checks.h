#pragma once

// The WebSocket upgrade's pure phases: is the request a well-formed RFC 6455 opening
// handshake, may this route take it, is its Origin allowed, does it carry the required
// cookie. All of it runs before any upstream connection exists (a refused upgrade never
// reaches the backend). No I/O; unit-tested in tests/unit/dataplane/ws_upgrade_checks_test.cc.

#include <optional>
#include <string_view>

#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/proxy_error.h"
#include "dataplane/stats/dataplane_stats.h"

namespace google::protobuf {
template <typename T>
class RepeatedPtrField;
}  // namespace google::protobuf

namespace onedomain::dataplane {

struct CompiledRoute;

using OriginList = google::protobuf::RepeatedPtrField<std::string>;

struct UpgradeRefusal {
  stats::UpgradeResult result;
  ProxyError error;
};

// RFC 6455 4.2.1 beyond "Connection: upgrade" + "Upgrade: websocket" (IsWebSocketUpgrade):
// GET, HTTP/1.1, Sec-WebSocket-Version 13, a Sec-WebSocket-Key of 16 bytes in base64, no
// body. Null when well-formed.
std::optional<ProxyError> CheckUpgradeRequest(const RequestHead& head);

// True when `origin` (the header's value) matches one of `allowed` ("scheme://host[:port]",
// case-insensitive scheme and host, default ports implied, "*" for any).
bool OriginAllowed(std::string_view origin, const OriginList& allowed);

// True when a Cookie header of `head` carries a cookie whose name is `pattern`, or starts
// with it when `pattern` ends in '*'. An empty pattern is always satisfied.
bool HasRequiredCookie(const RequestHead& head, std::string_view pattern);

// All of the above for `route`, in order: route allows WebSockets (403 not_allowed),
// request well-formed (400 malformed), Origin (403 origin_refused), cookie (401
// cookie_refused). `site_origins` stand in for an empty allowed_origins.
std::optional<UpgradeRefusal> CheckUpgrade(const RequestHead& head, const CompiledRoute& route,
                                           const OriginList& site_origins);

}  // namespace onedomain::dataplane
