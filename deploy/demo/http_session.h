#pragma once

// Listeners and HTTP/1.1 connections of the demo backend. Every accepted connection is one
// coroutine on its own strand (so --threads > 1 is safe) whose frame owns the socket, the
// read buffer and the body scratch space. On the API port a WebSocket upgrade to
// /ws/chat/{id} is handed to RunWsSession with the already-read request.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "deploy/demo/options.h"

namespace onedomain::demo {

enum class PortKind { kApi, kFrontend };

// Accepts until the acceptor is closed or the io_context stops; spawns one session per
// connection. `ctx` must outlive the io_context's handlers.
boost::asio::awaitable<void> AcceptLoop(boost::asio::ip::tcp::acceptor acceptor, PortKind kind,
                                        ServerContext& ctx);

}  // namespace onedomain::demo
