#include "dataplane/http_proxy/body_relay.h"

#include <boost/asio/error.hpp>
#include <string>

namespace onedomain::dataplane {
namespace {

RelayStatus ReadFailure(const error_code& ec, const Timer& deadline) {
  if (deadline.fired()) return RelayStatus::kSrcTimeout;
  if (ec == net::error::eof) return RelayStatus::kSrcClosed;
  if (ec == net::error::operation_aborted) return RelayStatus::kCancelled;
  return RelayStatus::kSrcError;
}

RelayStatus WriteFailure(const error_code& ec, const Timer& deadline) {
  if (deadline.fired()) return RelayStatus::kDstTimeout;
  if (ec == net::error::operation_aborted) return RelayStatus::kCancelled;
  return RelayStatus::kDstError;
}

// Reads more bytes into io.buf; returns kOk or the failure.
net::awaitable<RelayStatus> ReadMore(RelayIo& io) {
  io.src_deadline.Arm(io.src_timeout);
  const IoResult r = co_await io.src.ReadSome(io.buf.prepare(kRelayChunk));
  io.src_deadline.Disarm();
  if (r.ec) co_return ReadFailure(r.ec, io.src_deadline);
  io.buf.commit(r.n);
  co_return RelayStatus::kOk;
}

net::awaitable<RelayStatus> WriteOut(RelayIo& io, net::const_buffer a, net::const_buffer b,
                                     RelayResult& result) {
  io.dst_deadline.Arm(io.dst_timeout);
  const IoResult r = co_await io.dst.Write(a, b);
  io.dst_deadline.Disarm();
  if (r.ec) co_return WriteFailure(r.ec, io.dst_deadline);
  result.wire_bytes += r.n;
  co_return RelayStatus::kOk;
}

}  // namespace

net::awaitable<RelayResult> RelayFixed(RelayIo io, uint64_t length, net::const_buffer prefix) {
  RelayResult result;
  uint64_t remaining = length;
  for (;;) {
    const size_t avail =
        static_cast<size_t>(std::min<uint64_t>(io.buf.size(), remaining));
    if (avail > 0 || prefix.size() > 0) {
      const auto* data = static_cast<const char*>(io.buf.data().data());
      result.status = co_await WriteOut(io, prefix, net::const_buffer(data, avail), result);
      if (!result.ok()) co_return result;
      prefix = {};
      io.buf.consume(avail);
      remaining -= avail;
      result.body_bytes += avail;
    }
    if (remaining == 0) co_return result;
    result.status = co_await ReadMore(io);
    if (!result.ok()) co_return result;
  }
}

net::awaitable<RelayResult> RelayChunked(RelayIo io, ChunkedScanner& scanner,
                                         net::const_buffer prefix, uint64_t limit, bool dechunk) {
  RelayResult result;
  std::string plain;  // de-chunked data (HTTP/1.0 clients only)
  for (;;) {
    if (io.buf.size() > 0) {
      const std::string_view view(static_cast<const char*>(io.buf.data().data()), io.buf.size());
      ChunkedScanner::Result scan;
      if (dechunk) {
        plain.clear();
        scan = scanner.Feed(view, [&plain](const char* p, size_t n) { plain.append(p, n); });
      } else {
        scan = scanner.Feed(view);
      }
      if (scan.error) {
        result.status = RelayStatus::kBadFraming;
        co_return result;
      }
      if (limit != 0 && scanner.data_bytes() > limit) {
        result.status = RelayStatus::kTooLarge;
        co_return result;
      }
      const net::const_buffer out = dechunk ? net::const_buffer(plain.data(), plain.size())
                                            : net::const_buffer(view.data(), scan.consumed);
      if (out.size() > 0 || prefix.size() > 0) {
        result.status = co_await WriteOut(io, prefix, out, result);
        if (!result.ok()) co_return result;
        prefix = {};
        result.body_bytes += out.size();
      }
      io.buf.consume(scan.consumed);
      if (scan.done) co_return result;
    } else if (prefix.size() > 0) {
      result.status = co_await WriteOut(io, prefix, {}, result);
      if (!result.ok()) co_return result;
      prefix = {};
    }
    result.status = co_await ReadMore(io);
    if (!result.ok()) co_return result;
  }
}

net::awaitable<RelayResult> RelayUntilEof(RelayIo io, net::const_buffer prefix) {
  RelayResult result;
  for (;;) {
    const size_t avail = io.buf.size();
    if (avail > 0 || prefix.size() > 0) {
      const auto* data = static_cast<const char*>(io.buf.data().data());
      result.status = co_await WriteOut(io, prefix, net::const_buffer(data, avail), result);
      if (!result.ok()) co_return result;
      prefix = {};
      io.buf.consume(avail);
      result.body_bytes += avail;
    }
    const RelayStatus s = co_await ReadMore(io);
    if (s == RelayStatus::kSrcClosed) co_return result;  // the end of this body
    if (s != RelayStatus::kOk) {
      result.status = s;
      co_return result;
    }
  }
}

}  // namespace onedomain::dataplane
