#pragma once

// Streams a message body from a byte source to a byte sink without buffering it whole: at
// most one read buffer (kRelayChunk) per direction, with a progress deadline on every read
// and write (the concrete sources and sinks own them). Three framings: a known length,
// chunked (validated and relayed byte for byte, or de-chunked for clients that cannot take
// chunked framing), and "until the connection closes" (old-style responses).
//
// Bytes already in the source's buffer are the start of the body; bytes after the body's end
// stay there for the caller (a pipelined request, or garbage that makes an upstream
// connection unusable).
//
// Sources and sinks are the seam between the exchange and whoever is on either side: a
// socket (StreamSource/StreamSink: the upstream, an HTTP/1.1 client) or a codec's in-memory
// stream (an HTTP/2 stream next; the fake codec of the unit tests).
//
// Thread: one worker; a source or sink is borrowed for the duration of one relay.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <optional>
#include <string_view>

#include "dataplane/http_proxy/chunked_scanner.h"
#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/session_context.h"

namespace onedomain::dataplane {

enum class RelayStatus : uint8_t {
  kOk,
  kSrcClosed,  // end of stream before the body's end
  kSrcError,
  kSrcTimeout,
  kDstError,
  kDstTimeout,
  kBadFraming,  // malformed chunked framing
  kTooLarge,    // more chunked data than `limit`
  kCancelled,   // cancelled from outside (the other half of an exchange finished)
};

// Where body bytes come from. buffer() holds what arrived and nobody consumed yet. It changes
// only inside ReadMore: the relay writes straight from it, and a write may wait (a source
// filled in the background keeps what arrives elsewhere until then).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual beast::flat_buffer& buffer() = 0;
  // Appends more bytes to buffer(): kOk, or why not (kSrcClosed at the end of the stream,
  // kSrcTimeout, kSrcError, kCancelled). A source filled in the background returns kOk at
  // once when bytes arrived since its last return, so none wait unseen behind an end.
  virtual net::awaitable<RelayStatus> ReadMore() = 0;

  // ReadMore without the copy, for sources that can lend what arrives (a plain socket read
  // through the io_uring ring; lends() says so). With buffer() empty, Lend waits as ReadMore
  // does, then points `bytes` at what arrived, where it arrived: valid until the caller next
  // suspends or calls the source again. Return(n) marks the first n of them read; Keep() then
  // moves the rest into buffer() (before the caller suspends with them, or leaves them for
  // its caller). The defaults lend nothing.
  virtual bool lends() const { return false; }
  virtual net::awaitable<RelayStatus> Lend(net::const_buffer& bytes);
  virtual void Return(size_t /*n*/) {}
  virtual void Keep() {}
};

// Where bytes go. Write sends all of `a` then all of `b` (either may be empty) and adds what
// it wrote to `written`: kOk, kDstError, kDstTimeout or kCancelled.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual net::awaitable<RelayStatus> Write(net::const_buffer a, net::const_buffer b,
                                            uint64_t& written) = 0;
  // Write without a coroutine frame, for what the sink takes without waiting: true when that
  // settled the write (`status`: kOk, or why it failed); false when the caller must co_await
  // Write with what is left of `a` and `b` (advanced past what went, counted in `written`).
  // The default takes nothing.
  virtual bool TryWriteNow(net::const_buffer& /*a*/, net::const_buffer& /*b*/,
                           uint64_t& /*written*/, RelayStatus& /*status*/) {
    return false;
  }
};

// A socket as a source: reads up to kRelayChunk into `buf` under a progress deadline.
class StreamSource final : public ByteSource {
 public:
  StreamSource(AnyStream& stream, Timer& deadline, std::chrono::nanoseconds timeout,
               beast::flat_buffer& buf)
      : stream_(stream), deadline_(deadline), timeout_(timeout), buf_(buf) {}
  beast::flat_buffer& buffer() override { return buf_; }
  net::awaitable<RelayStatus> ReadMore() override;
  bool lends() const override;
  net::awaitable<RelayStatus> Lend(net::const_buffer& bytes) override;
  void Return(size_t n) override;
  void Keep() override;

 private:
  RelayStatus Failure(const error_code& ec) const;

  AnyStream& stream_;
  Timer& deadline_;
  std::chrono::nanoseconds timeout_;
  beast::flat_buffer& buf_;
  size_t lent_ = 0;  // bytes Lend showed and Return has not marked read
};

// A socket as a sink: one gathered write under a progress deadline.
class StreamSink final : public ByteSink {
 public:
  StreamSink(AnyStream& stream, Timer& deadline, std::chrono::nanoseconds timeout)
      : stream_(stream), deadline_(deadline), timeout_(timeout) {}
  net::awaitable<RelayStatus> Write(net::const_buffer a, net::const_buffer b,
                                    uint64_t& written) override;
  bool TryWriteNow(net::const_buffer& a, net::const_buffer& b, uint64_t& written,
                   RelayStatus& status) override;

 private:
  AnyStream& stream_;
  Timer& deadline_;
  std::chrono::nanoseconds timeout_;
};

struct RelayIo {
  ByteSource& src;
  ByteSink& dst;
};

struct RelayResult {
  RelayStatus status = RelayStatus::kOk;
  uint64_t body_bytes = 0;  // body bytes written to dst (framing included when relayed as is)
  uint64_t wire_bytes = 0;  // everything written to dst, prefix included
  bool ok() const { return status == RelayStatus::kOk; }
};

// `prefix` (usually the message head) goes out in the same write as the first body bytes.
net::awaitable<RelayResult> RelayFixed(RelayIo io, uint64_t length, net::const_buffer prefix);

// `limit` caps the chunk data (0: none). With `dechunk` only the data is written.
net::awaitable<RelayResult> RelayChunked(RelayIo io, ChunkedScanner& scanner,
                                         net::const_buffer prefix, uint64_t limit, bool dechunk);

net::awaitable<RelayResult> RelayUntilEof(RelayIo io, net::const_buffer prefix);

// A response body as `head` frames it (empty, chunked, a length, or until the end), `prefix`
// first.
net::awaitable<RelayResult> RelayResponseBody(RelayIo io, const ResponseHead& head,
                                              net::const_buffer prefix, bool dechunk);

// RelayResponseBody's start without a coroutine frame: a body of known length (or none) that
// is all in the source's buffer goes to the sink's TryWriteNow with `prefix`. `settled`: that
// was the whole relay (`result` says how it went). Otherwise the caller goes on with
// RelayFixed(io, remaining, prefix) when some bytes went (`result.wire_bytes`: `prefix` and
// the buffer are past them), else with RelayResponseBody.
struct BufferedRelay {
  bool settled = false;
  uint64_t remaining = 0;
  RelayResult result;
};
BufferedRelay TryRelayBuffered(RelayIo io, const ResponseHead& head, net::const_buffer& prefix);

// How much of a request body is already in `body` (the bytes received after the head).
struct BufferedBody {
  bool complete = false;            // all of it (a request without a body is complete)
  size_t bytes = 0;                 // the body's bytes in `body` (chunked framing included)
  std::optional<ProxyError> error;  // malformed chunked framing, or over `limit`
};
BufferedBody ProbeBufferedBody(const MessageFraming& framing, std::string_view body,
                               uint64_t limit);

}  // namespace onedomain::dataplane
