#pragma once

// One request/response exchange with an upstream, codec-neutral: a request head plus a body
// source in, a response head plus a body sink out. Inside: pick a host (balancer, outlier
// ejection), take a pooled connection or connect (max_connections, connect_timeout), send the
// rewritten head and the body, read the response head (response_timeout, the route's
// request_timeout), stream the response back, and return the connection to the pool when it
// is clean. Failures before the response starts become a local reply (502/503/504, ...);
// after it starts, both connections close.
//
// A WebSocket upgrade is the same exchange in ExchangeMode::kUpgrade: a fresh connection, the
// Upgrade fields forwarded, and on a 101 the mode switch: the 101 goes to the client and both
// connections leave in a WsHandoff for the tunnel engine (any other answer is relayed and the
// client connection closes).
//
// Retries: once, on a fresh connection, when a pooled connection turned out closed before
// any response byte and the method is idempotent (the request was sent from the buffer, so
// it can be sent again); and once, on another host, when connecting failed (nothing was sent).
//
// The client side is an ExchangeClient, implemented by a codec: the HTTP/1.1 session today
// (http_session.cc), an HTTP/2 stream next, an in-memory fake in the unit tests
// (tests/unit/dataplane/upstream_exchange_test.cc).
//
// Thread: the worker of the client connection; everything here is borrowed from the codec's
// coroutine frame for the duration of RunExchange.

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "dataplane/http_proxy/body_relay.h"
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/ws_tunnel/ws_handoff.h"

namespace onedomain::dataplane {

class ClusterRuntime;
class Worker;
struct CompiledRoute;

// The client side of an exchange, as its codec presents it.
class ExchangeClient {
 public:
  virtual ~ExchangeClient() = default;
  // The request body, in the framing the request head declares (HTTP/1.1: as received),
  // what already arrived first. Reading more may move the buffer: the exchange reads the
  // head's views only before its first ReadMore.
  virtual ByteSource& request_body() = 0;
  // Where response bytes go: heads from RenderResponseHead, then the body.
  virtual ByteSink& response_out() = 0;
  // Appends `head` (an interim or the final response) in the client's wire format.
  virtual void RenderResponseHead(const ResponseHead& head, DownstreamHeadParams params,
                                  std::string& out) = 0;
  // Tells a client that waits for it (Expect: 100-continue) to send its body; false when
  // the client is gone.
  virtual net::awaitable<bool> SendContinue() = 0;
  // The answer for an error before the response started (local_reply). Returns whether the
  // client connection may carry another request.
  virtual net::awaitable<bool> SendLocalReply(const ProxyError& error, RequestRecord& record,
                                              SendReplyOptions options) = 0;
  // Cancels the client I/O in flight (the route's request_timeout passed).
  virtual void CancelIo() = 0;
};

enum class ExchangeMode : uint8_t {
  kHttp,     // a request and its response
  kUpgrade,  // a WebSocket upgrade: a 101 switches to the tunnel
};

// What the codec says about the request.
struct ExchangeRequest {
  const RequestHead& head;
  const CompiledRoute& route;
  ClusterRuntime& cluster;
  RequestRecord& record;
  std::string_view client_ip;        // for X-Forwarded-For
  std::string_view forwarded_proto;  // X-Forwarded-Proto
  uint32_t max_header_bytes = 0;     // the listener's; response heads get at least 64 KiB
  uint64_t body_limit = 0;           // chunked request data beyond it: 413 (0: none)
  bool keep_alive_ok = false;        // the client wants keep-alive and the worker is not draining
  bool client_takes_interim = true;  // pass 1xx answers on (HTTP/1.1)
  bool client_takes_chunked = true;  // relay chunked bodies as they are (else de-chunk)
  ExchangeMode mode = ExchangeMode::kHttp;
  bool replace_forwarded_for = false;  // X-Forwarded-For is client_ip alone (no client hops)
};

struct ExchangeResult {
  bool keep_alive = false;              // the client connection may carry another request
  std::unique_ptr<WsHandoff> upgraded;  // kUpgrade and the 101 went out: run the tunnel
};

// Per-session scratch the exchange reuses across requests (no allocation per request once
// warmed up).
struct ExchangeBuffers {
  ExchangeBuffers() {  // a typical exchange's sizes: no regrowth
    response.fields.reserve(32);
    request_head.reserve(1024);
    response_head.reserve(1024);
  }

  beast::flat_buffer upstream_in;  // bytes from the upstream
  std::string request_head;        // the head sent upstream
  std::string response_head;       // the head sent to the client
  ResponseHead response;
};

// Serves `req` on its route's cluster for `client`. Consumes the request body from
// client.request_body() (bytes after it stay there: a pipelined request).
net::awaitable<ExchangeResult> RunExchange(ExchangeClient& client, ExchangeRequest req,
                                           Worker& worker, ExchangeBuffers& bufs);

}  // namespace onedomain::dataplane
