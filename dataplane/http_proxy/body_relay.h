#pragma once

// Streams a message body from one stream to another without buffering it whole: at most one
// read buffer (kRelayChunk) per direction, with a progress deadline on every read and write.
// Three framings: a known length, chunked (validated and relayed byte for byte, or
// de-chunked for HTTP/1.0 clients), and "until the connection closes" (old-style responses).
//
// Bytes already in `io.buf` are the start of the body; bytes after the body's end stay in
// `io.buf` for the caller (a pipelined request, or garbage that makes an upstream connection
// unusable).

#include <boost/asio/awaitable.hpp>
#include <cstdint>

#include "dataplane/http_proxy/chunked_scanner.h"
#include "dataplane/http_proxy/session_context.h"

namespace onedomain::dataplane {

enum class RelayStatus : uint8_t {
  kOk,
  kSrcClosed,     // end of stream before the body's end
  kSrcError,
  kSrcTimeout,
  kDstError,
  kDstTimeout,
  kBadFraming,    // malformed chunked framing
  kTooLarge,      // more chunked data than `limit`
  kCancelled,     // cancelled from outside (the other half of an exchange finished)
};

struct RelayResult {
  RelayStatus status = RelayStatus::kOk;
  uint64_t body_bytes = 0;   // body bytes written to dst (framing included when relayed as is)
  uint64_t wire_bytes = 0;   // everything written to dst, prefix included
  bool ok() const { return status == RelayStatus::kOk; }
};

// `prefix` (usually the message head) goes out in the same write as the first body bytes.
net::awaitable<RelayResult> RelayFixed(RelayIo io, uint64_t length, net::const_buffer prefix);

// `limit` caps the chunk data (0: none). With `dechunk` only the data is written.
net::awaitable<RelayResult> RelayChunked(RelayIo io, ChunkedScanner& scanner,
                                         net::const_buffer prefix, uint64_t limit, bool dechunk);

net::awaitable<RelayResult> RelayUntilEof(RelayIo io, net::const_buffer prefix);

}  // namespace onedomain::dataplane
