#pragma once

// Per-worker listening sockets: every worker binds its own SO_REUSEPORT socket on a
// listener's address, so the kernel spreads connections over the workers and no accept lock
// is shared. The accept loop is a coroutine on the worker that owns its acceptor; closing the
// acceptor (drain, listener removed) ends it.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace onedomain::dataplane {

class Worker;

// Opens, binds (SO_REUSEPORT) and listens on address:port for `ioc` (port 0: ephemeral).
// Safe to call from any thread before the acceptor is handed to its worker.
absl::StatusOr<boost::asio::ip::tcp::acceptor> OpenAcceptor(boost::asio::io_context& ioc,
                                                            const std::string& address,
                                                            uint16_t port);

// Runs the accept loop for listener `slot` on `worker`. Call on the worker's thread.
void StartAcceptLoop(Worker& worker, uint32_t slot, boost::asio::ip::tcp::acceptor acceptor);

}  // namespace onedomain::dataplane
