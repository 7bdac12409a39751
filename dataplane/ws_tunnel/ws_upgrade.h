#pragma once

// The WebSocket branch of a request: policy checks (ws_upgrade_checks), then a fresh upstream
// connection, the upgrade forwarded with its cookies (after the route's cookie policy),
// Origin, Sec-WebSocket-* and X-Forwarded-*, and the answer relayed: a 101 untouched (but
// Set-Cookie through the cookie policy, as on any response) and anything else as is. On a
// 101 the connection and every byte already read past the two heads go into a WsHandoff,
// which the session turns into a tunnel (RunWsTunnel) once its HTTP state is freed.
//
// Thread: the session's worker.

#include <boost/asio/awaitable.hpp>
#include <memory>
#include <string>

#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/proxy_exchange.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/http_proxy/session_context.h"
#include "dataplane/ws_tunnel/ws_handoff.h"

namespace onedomain::dataplane {

struct CompiledRoute;
class WorkerConfig;

// Serves the upgrade request `head` (its bytes start `down.in`) on `route`. Returns whether
// the client connection may serve another request; on a 101, `handoff` is set and the
// session must hand the connection to RunWsTunnel.
net::awaitable<bool> ServeWebSocketUpgrade(Downstream& down, const RequestHead& head,
                                           const CompiledRoute& route, WorkerConfig& cfg,
                                           RequestRecord& record, ExchangeBuffers& bufs,
                                           std::unique_ptr<WsHandoff>& handoff);

}  // namespace onedomain::dataplane
