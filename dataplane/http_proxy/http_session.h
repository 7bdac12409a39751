#pragma once

// A client connection: TLS handshake when the listener has TLS (after checking the client
// is not speaking plain HTTP to it), then the HTTP/1.1 codec's keep-alive loop: read a head
// under the idle and header deadlines, run the phases, drive the codec-neutral upstream
// exchange (upstream_exchange.h) through Http1Client, repeat; after an upgrade's 101, the
// tunnel. One coroutine whose frame owns the stream, buffers and parser state (STYLE rule 1).
//
// Thread: spawned on the accepting worker's dispatcher.

#include <cstdint>

#include "dataplane/runtime/unique_fd.h"

namespace onedomain::dataplane {

class Worker;

// Starts serving `socket` (connected, non-blocking), accepted on the listener with
// `listener_slot`, as a detached coroutine on `worker`. Exceptions end only this connection
// (logged).
void SpawnConnection(Worker& worker, uint32_t listener_slot, UniqueFd socket);

}  // namespace onedomain::dataplane
