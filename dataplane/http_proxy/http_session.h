#pragma once

// A client connection: TLS handshake when the listener has TLS (after checking the client
// is not speaking plain HTTP to it), then the HTTP/1.1 codec's keep-alive loop: read a head
// under the idle and header deadlines, run the phases, drive the codec-neutral upstream
// exchange (upstream_exchange.h) through Http1Client, repeat; after an upgrade's 101, the
// tunnel. One coroutine whose frame owns the stream, buffers and parser state (STYLE rule 1).
//
// Thread: spawned on the accepting worker's dispatcher.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <string_view>

#include "dataplane/runtime/unique_fd.h"

namespace onedomain::dataplane {

class AnyStream;
class Worker;
struct ClientState;
struct SessionLink;

// The HTTP/2 codec (dataplane/http2, which sits above this folder), handed in by the
// listener: it takes a connection whose TLS handshake chose ALPN "h2", or a plain one that
// started with the HTTP/2 preface on a listener with http2.prior_knowledge. `already_read`:
// client bytes read before the hand-over. The session shuts the stream down after it, with a
// lingering close first (reading and dropping up to the bytes the codec returns) when the
// codec ended the connection while the client may still be sending: a plain close would
// reset it and could destroy the GOAWAY in flight.
// `client`: the connection's client (address, and the counts the connection holds).
using Http2Codec = boost::asio::awaitable<uint64_t> (*)(AnyStream& stream, Worker& worker,
                                                        uint32_t slot, ClientState& client,
                                                        SessionLink& link,
                                                        std::string_view already_read);

// Starts serving `socket` (connected, non-blocking), accepted on the listener with
// `listener_slot`, as a detached coroutine on `worker`. Exceptions end only this connection
// (logged). Without `http2`, "h2" is never served (a client that negotiated it anyway gets
// HTTP/1.1 parse errors, as before).
void SpawnConnection(Worker& worker, uint32_t listener_slot, UniqueFd socket,
                     Http2Codec http2 = nullptr);

}  // namespace onedomain::dataplane
