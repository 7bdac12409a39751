#pragma once

// The HTTP/2 codec (RFC 9113) on one client connection, with libnghttp2 doing framing, HPACK
// and flow-control accounting, and this code owning the socket, the buffers and the
// back-pressure:
//
// - the connection is event-driven on the stream's NonBlockingStream face (as the tunnel
//   engine is): readable bytes go from the worker's scratch buffer into nghttp2, frames
//   nghttp2 wants to send are written at once, and only what the socket did not take is kept;
//   reading pauses while that backlog is large;
// - every request stream is a coroutine that drives the same codec-neutral upstream exchange
//   as an HTTP/1.1 request (upstream_exchange.h) through an ExchangeClient: the stream's
//   DATA is its ByteSource, the response goes out through a deferred nghttp2 data provider
//   (its ByteSink), both bounded; window updates are manual (nghttp2_session_consume once the
//   exchange took the bytes), so a slow upstream throttles the client's stream and a slow
//   client throttles the upstream read;
// - the phases (normalization, routing, cookie policy, limits, X-Forwarded-*, access log,
//   metrics) are the HTTP/1.1 ones, on a RequestHead built from the HTTP/2 fields
//   (h2_headers.h).
//
// Thread: the accepting worker. The connection lives on ServeHttp2's coroutine frame; its
// streams' coroutines borrow it, and it waits for all of them before it returns.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <string_view>

namespace onedomain::dataplane {

class AnyStream;
class Worker;
struct ClientState;
struct SessionLink;

namespace h2 {

// The client connection preface (RFC 9113 3.4).
inline constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Serves HTTP/2 on `stream` (TLS after ALPN "h2", or plain with prior knowledge) until the
// connection ends. `already_read`: bytes the caller read from the client before handing the
// connection over (the preface, for prior knowledge). The caller shuts the stream down after,
// lingering first for up to the bytes this returns (0: none): when the node ended the
// connection (GOAWAY) while the client's socket was still open, what the client may still
// have in flight (our connection window and some frames) is read and dropped so that the
// close does not reset the connection under the GOAWAY.
// `client`: the connection's client; a trusted proxy's first stream decides it from
// X-Forwarded-For, and every stream's request and WebSocket limits count against it.
boost::asio::awaitable<uint64_t> ServeHttp2(AnyStream& stream, Worker& worker, uint32_t slot,
                                            ClientState& client, SessionLink& link,
                                            std::string_view already_read);

}  // namespace h2
}  // namespace onedomain::dataplane
