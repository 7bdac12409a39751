#pragma once

// One request/response exchange with an upstream, after the request was parsed, checked and
// routed: pick a host, take a pooled connection or connect, send the rewritten head and
// stream the body, read the response head, stream the response back, and return the
// connection to the pool when it is clean. Failures before the response starts become a
// local reply (502/503/504, ...); after it starts, both connections close.
//
// Retries: once, on a fresh connection, when a pooled connection turned out closed before
// any response byte and the method is idempotent (the request was sent from the buffer, so
// it can be sent again); and once, on another host, when connecting failed (nothing was sent).
//
// Thread: the session's worker.

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <optional>
#include <string>

#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/http_proxy/session_context.h"

namespace onedomain::dataplane {

struct CompiledRoute;
class WorkerConfig;

// Per-session scratch the exchange reuses across requests (no allocation per request once
// warmed up).
struct ExchangeBuffers {
  beast::flat_buffer upstream_in;  // bytes from the upstream
  std::string request_head;        // the head sent upstream
  std::string response_head;       // the head sent to the client
  ResponseHead response;
};

// Reads the start of the request's body into `down.in` before any upstream connection is
// taken: all of it, or the listener's request_buffer_bytes, within its body_timeout (nginx
// buffers bodies the same way, so a slow upload pins no backend connection). Answers
// Expect: 100-continue first when the body is not here yet. Keeps `head`'s views valid when
// the buffer grows. An error means the request is answered with it and the connection closes.
net::awaitable<std::optional<ProxyError>> ReadRequestBodyStart(Downstream& down, RequestHead& head,
                                                              uint64_t body_limit);

// Serves the request `head` (whose bytes start `down.in`) on `route`. Consumes the request's
// bytes from `down.in`. Returns true when the client connection may serve another request.
net::awaitable<bool> ProxyExchange(Downstream& down, const RequestHead& head,
                                   const CompiledRoute& route, WorkerConfig& cfg,
                                   RequestRecord& record, ExchangeBuffers& bufs);

}  // namespace onedomain::dataplane
