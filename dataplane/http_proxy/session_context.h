#pragma once

// What a session lends to the request it is serving: the client stream and its read buffer,
// the deadline of client I/O, the worker. Everything here is owned by the session's
// coroutine frame (STYLE rule 1); callees borrow it while the session awaits them.
//
// Thread: one worker.

#include <boost/beast/core/flat_buffer.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/dispatcher.h"

namespace onedomain::dataplane {

class Worker;
struct ClientState;
struct CompiledListener;

namespace beast = boost::beast;

// Read sizes: one socket read moves up to this much body. Big enough for throughput, small
// enough that a thousand busy connections stay within a few tens of MiB.
inline constexpr size_t kRelayChunk = 64 * 1024;
inline constexpr size_t kInitialReadSize = 16 * 1024;

struct Downstream {
  AnyStream& stream;
  Timer& deadline;         // client I/O; cancels `stream`
  beast::flat_buffer& in;  // bytes from the client not yet consumed
  Worker& worker;
  std::string_view client_ip;
  const CompiledListener& listener;
  ClientState* client = nullptr;  // the connection's client (client_limits_phase.h)
};

}  // namespace onedomain::dataplane
