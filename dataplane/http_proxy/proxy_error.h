#pragma once

// The outcome vocabulary of one proxied request (STYLE: "one error vocabulary per layer").
// Phases and the exchange return a ProxyError; local_reply alone turns it into a response, a
// metric and a log field. Plain value type: no allocation, no I/O types.

#include <cstdint>
#include <string_view>

namespace onedomain::dataplane {

enum class ProxyErrorKind : uint8_t {
  // Downstream (client) side.
  kMalformedRequest,     // 400: the header or a chunked body does not parse
  kSmuggling,            // 400: ambiguous framing (CL+TE, differing CLs, TE != chunked, obs-fold)
  kBadHost,              // 400: missing or repeated Host
  kBadTarget,            // 400: a request-target we cannot route
  kPlainHttpOnTlsPort,   // 400: plain HTTP sent to a TLS listener
  kNoRoute,              // 404
  kHeaderTimeout,        // 408: slowloris
  kBodyTimeout,          // 408: the client stalled while sending its body
  kBodyTooLarge,         // 413
  kHeaderTooLarge,       // 431
  kBadWebSocketUpgrade,  // 400: not GET, version not 13, bad key
  kWebSocketNotAllowed,  // 403: an upgrade on a route without `websocket: true`
  kOriginRefused,        // 403: Origin not in the route's allow-list
  kCookieRequired,       // 401: the route's required cookie is missing
  kRateLimited,          // 429: a client's request or upgrade rate (Retry-After)
  kTooManyWebSockets,    // 429: a client's or a session cookie's WebSocket cap (Retry-After)
  kUnsupportedProtocol,  // 501: an HTTP/2 extended CONNECT for a protocol other than websocket
  // Upstream side.
  kUpstreamConnectFailed,    // 502: refused, unreachable
  kUpstreamReset,            // 502: closed or reset before a complete response header
  kUpstreamBadResponse,      // 502: malformed response
  kNoHealthyUpstream,        // 503: every endpoint ejected or unresolved
  kUpstreamPoolFull,         // 503: max_connections reached and none freed in time
  kUpstreamConnectTimeout,   // 504
  kUpstreamResponseTimeout,  // 504
  kRequestTimeout,           // 504: the route's overall request_timeout
};

struct ProxyError {
  ProxyErrorKind kind;
  // Short, static detail for the body and the log ("conflicting Content-Length and
  // Transfer-Encoding"). Never request data: bodies must not reflect user input.
  std::string_view detail = {};
  // Seconds for a Retry-After field (429s); 0: none.
  uint32_t retry_after = 0;
};

// Status code of a kind.
int StatusOf(ProxyErrorKind kind);
// Stable snake_case name for logs ("no_route").
std::string_view NameOf(ProxyErrorKind kind);

}  // namespace onedomain::dataplane
