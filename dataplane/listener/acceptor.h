#pragma once

// Per-worker listening sockets: every worker binds its own SO_REUSEPORT socket on a
// listener's address, so the kernel spreads connections over the workers and no accept lock
// is shared. The accept loop is a coroutine on the worker that owns the socket, waiting on
// the worker's poller; closing it (drain, listener removed) ends the loop.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "dataplane/runtime/unique_fd.h"

namespace onedomain::dataplane {

class Worker;

// Opens, binds (SO_REUSEPORT) and listens on address:port (port 0: ephemeral); the socket is
// non-blocking. Safe to call from any thread before the socket is handed to its worker.
absl::StatusOr<UniqueFd> OpenListenSocket(const std::string& address, uint16_t port);

// Fails when some socket already listens on address:port: a bind without SO_REUSEPORT
// succeeds only then (SO_REUSEADDR still ignores connections in TIME_WAIT).
absl::Status CheckPortFree(const std::string& address, uint16_t port);

// The port `fd` is bound to (0 if it cannot be read).
uint16_t LocalPort(int fd);

// Runs the accept loop for listener `slot` on `worker`. Call on the worker's thread.
void StartAcceptLoop(Worker& worker, uint32_t slot, UniqueFd listen_socket);

}  // namespace onedomain::dataplane
