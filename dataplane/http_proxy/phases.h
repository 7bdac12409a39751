#pragma once

// The pure request phases (Pingora's "phases"): checks, routing facts and header rewriting,
// over a parsed head and a few parameters, with no sockets and no clocks. Unit-tested and
// fuzzed directly; http_session and upstream_exchange call them in order.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/proxy_error.h"

namespace onedomain::dataplane {

class CompiledCookiePolicy;
struct CompiledRoute;
namespace stats {
struct CookieCounters;
}  // namespace stats

// Request checks beyond the parser: Host rules (RFC 9112 3.2), request-target form, CONNECT.
std::optional<ProxyError> CheckRequest(const RequestHead& head);

// Runs before CheckRequest and routing. Refuses a request-target with bytes outside visible
// ASCII and a Host that is not a valid authority (RFC 3986 3.2); makes an absolute-form
// target's authority the host (RFC 9112 3.2.2: it wins over Host) and the target origin-form;
// removes dot-segments, also percent-encoded ones ("%2e"), so that "/ws/../api/x" is routed
// and forwarded as "/api/x" (RFC 3986 5.2.4). When the target changes, the new one is built
// in `storage` and head.target (and head.host) point there or into the request.
std::optional<ProxyError> NormalizeRequest(RequestHead& head, std::string& storage);

// The request path with dot-segments removed (RFC 3986 5.2.4), treating "%2e"/"%2E" as '.'.
// Exposed for tests. `path` starts with '/'.
void RemoveDotSegments(std::string_view path, std::string& out);

// 413 when a declared Content-Length exceeds `limit` (0: unlimited). Chunked bodies are
// checked while they stream.
std::optional<ProxyError> CheckBodyLimit(const RequestHead& head, uint64_t limit);

// RFC 6455 4.1 / 9110 7.8: "upgrade" among the Connection tokens and "websocket" among the
// Upgrade protocols. (GET and the Sec-WebSocket-* checks belong to the tunnel's own phase.)
bool IsWebSocketUpgrade(const RequestHead& head);

// True when the method may be retried on another connection (RFC 9110 9.2.2).
bool IsIdempotent(http::verb method);

// Does the request carry a body?
inline bool HasRequestBody(const RequestHead& head) {
  return head.framing.chunked || (head.framing.content_length && *head.framing.content_length > 0);
}

// Field names listed in Connection headers (they are hop-by-hop, RFC 9110 7.6.1).
struct ConnectionTokens {
  static constexpr size_t kMax = 32;
  std::array<std::string_view, kMax> names{};
  size_t count = 0;
  bool overflow = false;  // more tokens than kMax: the request is refused
  bool Contains(std::string_view name) const;
};
template <typename Fields>
ConnectionTokens CollectConnectionTokens(const Fields& fields);

// True for fields that never cross the proxy: Connection, Keep-Alive, Proxy-*, TE, Trailer,
// Transfer-Encoding, Upgrade (framing fields are re-emitted by the rewriter itself).
bool IsHopByHop(const HeaderField& f, const ConnectionTokens& tokens);

struct UpstreamHeadParams {
  const CompiledRoute* route = nullptr;           // prefix_rewrite, host_rewrite
  std::string_view client_ip;                     // appended to X-Forwarded-For
  bool replace_forwarded_for = false;             // X-Forwarded-For is client_ip alone
  std::string_view forwarded_proto;               // X-Forwarded-Proto
  std::string_view default_host;                  // Host when the client sent none
  bool keep_upgrade = false;                      // forward Upgrade/Connection: upgrade (tunnels)
  bool strip_expect = false;                      // the proxy answers 100-continue itself
  const CompiledCookiePolicy* cookies = nullptr;  // null: Cookie passes byte for byte
};

// Appends the head to send upstream: origin-form target (prefix-rewritten), HTTP/1.1, the
// client's fields in order minus hop-by-hop ones, normalised framing, X-Forwarded-*.
void AppendUpstreamRequestHead(const RequestHead& head, const UpstreamHeadParams& p,
                               std::string& out);

struct DownstreamHeadParams {
  int client_version = 11;
  bool close = false;         // send Connection: close (we close after this response)
  bool dechunk = false;       // the body goes out de-chunked (HTTP/1.0 client): drop framing fields
  bool keep_upgrade = false;  // a 101 for a tunnel: keep Upgrade and Connection: upgrade
  std::string_view upstream_host;  // for cookie domain rewrites of cookies without Domain
  const CompiledCookiePolicy* cookies = nullptr;     // null: Set-Cookie passes byte for byte
  stats::CookieCounters* cookie_counters = nullptr;  // where rewrites are counted; may be null
};

// Appends the head to send to the client for an upstream response.
void AppendDownstreamResponseHead(const ResponseHead& head, const DownstreamHeadParams& p,
                                  std::string& out);

// Where EmitDownstreamResponseFields puts the fields of the client's response head.
class ResponseFieldSink {
 public:
  virtual ~ResponseFieldSink() = default;
  virtual void Field(std::string_view name, std::string_view value) = 0;
  // A field whose value the caller appends to the returned string (a rewritten Set-Cookie);
  // EndValue ends it.
  virtual std::string& BeginValue(std::string_view name) = 0;
  virtual void EndValue() = 0;
};

// The fields of AppendDownstreamResponseHead (the same filtering, cookie policy and framing
// fields, in the same order), without the status line: for a codec that frames heads itself
// (HTTP/2), so it need not parse the HTTP/1.1 text again.
void EmitDownstreamResponseFields(const ResponseHead& head, const DownstreamHeadParams& p,
                                  ResponseFieldSink& sink);

// The target to send upstream: origin-form, with the route's prefix rewritten.
void AppendUpstreamTarget(std::string_view target, const CompiledRoute* route, std::string& out);

// ---- template definitions ---------------------------------------------------------------

template <typename Fields>
ConnectionTokens CollectConnectionTokens(const Fields& fields) {
  ConnectionTokens t;
  for (const HeaderField& f : fields) {
    if (f.id != http::field::connection && f.id != http::field::proxy_connection) continue;
    std::string_view v = f.value;
    while (!v.empty()) {
      const size_t comma = v.find(',');
      std::string_view token = v.substr(0, comma);
      while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
        token.remove_prefix(1);
      while (!token.empty() && (token.back() == ' ' || token.back() == '\t'))
        token.remove_suffix(1);
      if (!token.empty()) {
        if (t.count < ConnectionTokens::kMax) {
          t.names[t.count++] = token;
        } else {
          t.overflow = true;
        }
      }
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return t;
}

}  // namespace onedomain::dataplane
