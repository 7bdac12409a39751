#include "dataplane/http_proxy/body_relay.h"

#include <algorithm>
#include <boost/asio/error.hpp>
#include <string>

namespace onedomain::dataplane {
net::awaitable<RelayStatus> ByteSource::Lend(net::const_buffer& bytes) {
  bytes = {};
  co_return RelayStatus::kSrcError;  // sources that lend override it
}

RelayStatus StreamSource::Failure(const error_code& ec) const {
  if (deadline_.fired()) return RelayStatus::kSrcTimeout;
  if (ec == net::error::eof) return RelayStatus::kSrcClosed;
  if (ec == net::error::operation_aborted) return RelayStatus::kCancelled;
  return RelayStatus::kSrcError;
}

net::awaitable<RelayStatus> StreamSource::ReadMore() {
  deadline_.Arm(timeout_);
  const IoResult r = co_await stream_.ReadSome(buf_.prepare(kRelayChunk));
  deadline_.Disarm();
  if (r.ec) co_return Failure(r.ec);
  buf_.commit(r.n);
  co_return RelayStatus::kOk;
}

bool StreamSource::lends() const { return stream_.lends(); }

net::awaitable<RelayStatus> StreamSource::Lend(net::const_buffer& bytes) {
  lent_ = 0;
  deadline_.Arm(timeout_);
  const IoResult r = co_await stream_.Lend(bytes);
  deadline_.Disarm();
  if (r.ec) co_return Failure(r.ec);
  lent_ = r.n;
  co_return RelayStatus::kOk;
}

void StreamSource::Return(size_t n) {
  n = std::min(n, lent_);
  stream_.ConsumeLent(n);
  lent_ -= n;
}

void StreamSource::Keep() {
  while (lent_ > 0) {
    error_code ec;
    const size_t n = stream_.TryRead(buf_.prepare(lent_), ec);
    if (n == 0) break;  // cannot happen: the bytes are there
    buf_.commit(n);
    lent_ -= std::min(n, lent_);
  }
  lent_ = 0;
}

net::awaitable<RelayStatus> StreamSink::Write(net::const_buffer a, net::const_buffer b,
                                              uint64_t& written) {
  deadline_.Arm(timeout_);
  const IoResult r = co_await stream_.Write(a, b);
  deadline_.Disarm();
  if (r.ec) {
    if (deadline_.fired()) co_return RelayStatus::kDstTimeout;
    if (r.ec == net::error::operation_aborted) co_return RelayStatus::kCancelled;
    co_return RelayStatus::kDstError;
  }
  written += r.n;
  co_return RelayStatus::kOk;
}

bool StreamSink::TryWriteNow(net::const_buffer& a, net::const_buffer& b, uint64_t& written,
                             RelayStatus& status) {
  const net::const_buffer bufs[2] = {a, b};
  error_code ec;
  size_t n = a.size() + b.size() == 0 ? 0 : stream_.TryWrite(bufs, 2, ec);
  written += n;
  const size_t from_a = std::min(n, a.size());
  a += from_a;
  b += n - from_a;
  if (ec && ec != net::error::would_block) {
    status = ec == net::error::operation_aborted ? RelayStatus::kCancelled : RelayStatus::kDstError;
    return true;
  }
  status = RelayStatus::kOk;
  return a.size() + b.size() == 0;
}

namespace {

// The first `take` bytes of what the source lent go to the sink as far as it takes them
// without waiting; what went is marked read. Anything left of `lent` (what the sink did not
// take, bytes past `take`) moves into the source's buffer before the caller can suspend.
// Returns the bytes that went; result.status says whether the sink failed.
size_t WriteLent(RelayIo io, net::const_buffer lent, size_t take, RelayResult& result) {
  net::const_buffer none;
  net::const_buffer body(lent.data(), take);
  io.dst.TryWriteNow(none, body, result.wire_bytes, result.status);
  const size_t went = take - body.size();
  io.src.Return(went);
  if (went < lent.size()) io.src.Keep();
  return went;
}

// Whether a chunked body's scan lets the relay go on: kOk, kBadFraming or kTooLarge (more
// data than `limit`, when not 0).
RelayStatus ScanStatus(const ChunkedScanner::Result& scan, const ChunkedScanner& scanner,
                       uint64_t limit) {
  if (scan.error) return RelayStatus::kBadFraming;
  if (limit != 0 && scanner.data_bytes() > limit) return RelayStatus::kTooLarge;
  return RelayStatus::kOk;
}

}  // namespace

net::awaitable<RelayResult> RelayFixed(RelayIo io, uint64_t length, net::const_buffer prefix) {
  RelayResult result;
  uint64_t remaining = length;
  for (;;) {
    const size_t avail = static_cast<size_t>(std::min<uint64_t>(io.src.buffer().size(), remaining));
    if (avail > 0 || prefix.size() > 0) {
      const auto* data = static_cast<const char*>(io.src.buffer().data().data());
      net::const_buffer body(data, avail);
      if (!io.dst.TryWriteNow(prefix, body, result.wire_bytes, result.status)) {
        result.status = co_await io.dst.Write(prefix, body, result.wire_bytes);
      }
      if (!result.ok()) co_return result;
      prefix = {};
      io.src.buffer().consume(avail);
      remaining -= avail;
      result.body_bytes += avail;
    }
    if (remaining == 0) co_return result;
    if (io.src.lends()) {
      // Straight from where the bytes arrived to the sink, without a copy into buffer()
      // (empty here) in between, as long as the sink takes them without waiting. What it
      // does not take goes into buffer() for the loop's (waiting) write; bytes past the
      // body's end stay there for the caller.
      net::const_buffer lent;
      result.status = co_await io.src.Lend(lent);
      if (!result.ok()) co_return result;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(lent.size(), remaining));
      const size_t went = WriteLent(io, lent, take, result);
      remaining -= went;
      result.body_bytes += went;
      if (!result.ok()) co_return result;
      continue;
    }
    result.status = co_await io.src.ReadMore();
    if (!result.ok()) co_return result;
  }
}

net::awaitable<RelayResult> RelayChunked(RelayIo io, ChunkedScanner& scanner,
                                         net::const_buffer prefix, uint64_t limit, bool dechunk) {
  RelayResult result;
  std::string plain;  // de-chunked data (HTTP/1.0 clients only)
  for (;;) {
    if (io.src.buffer().size() > 0) {
      const beast::flat_buffer& buf = io.src.buffer();
      const std::string_view view(static_cast<const char*>(buf.data().data()), buf.size());
      ChunkedScanner::Result scan;
      if (dechunk) {
        plain.clear();
        scan = scanner.Feed(view, [&plain](const char* p, size_t n) { plain.append(p, n); });
      } else {
        scan = scanner.Feed(view);
      }
      result.status = ScanStatus(scan, scanner, limit);
      if (!result.ok()) co_return result;
      const net::const_buffer out = dechunk ? net::const_buffer(plain.data(), plain.size())
                                            : net::const_buffer(view.data(), scan.consumed);
      if (out.size() > 0 || prefix.size() > 0) {
        net::const_buffer rest = out;
        if (!io.dst.TryWriteNow(prefix, rest, result.wire_bytes, result.status)) {
          result.status = co_await io.dst.Write(prefix, rest, result.wire_bytes);
        }
        if (!result.ok()) co_return result;
        prefix = {};
        result.body_bytes += out.size();
      }
      io.src.buffer().consume(scan.consumed);
      if (scan.done) co_return result;
    } else if (prefix.size() > 0) {
      result.status = co_await io.dst.Write(prefix, {}, result.wire_bytes);
      if (!result.ok()) co_return result;
      prefix = {};
    }
    if (!dechunk && io.src.lends() && io.src.buffer().size() == 0) {
      // As in RelayFixed: scanned where the bytes arrived and written from there.
      net::const_buffer lent;
      result.status = co_await io.src.Lend(lent);
      if (!result.ok()) co_return result;
      const ChunkedScanner::Result scan =
          scanner.Feed(std::string_view(static_cast<const char*>(lent.data()), lent.size()));
      result.status = ScanStatus(scan, scanner, limit);
      if (!result.ok()) co_return result;
      const size_t went = WriteLent(io, lent, scan.consumed, result);
      if (!result.ok()) co_return result;
      if (went < scan.consumed) {
        // Scanned already: written from buffer() (where WriteLent kept it), not scanned again.
        const size_t rest = scan.consumed - went;
        result.status = co_await io.dst.Write(
            {}, net::const_buffer(io.src.buffer().data().data(), rest), result.wire_bytes);
        if (!result.ok()) co_return result;
        io.src.buffer().consume(rest);
      }
      result.body_bytes += scan.consumed;
      if (scan.done) co_return result;
      continue;
    }
    result.status = co_await io.src.ReadMore();
    if (!result.ok()) co_return result;
  }
}

net::awaitable<RelayResult> RelayUntilEof(RelayIo io, net::const_buffer prefix) {
  RelayResult result;
  for (;;) {
    const size_t avail = io.src.buffer().size();
    if (avail > 0 || prefix.size() > 0) {
      const auto* data = static_cast<const char*>(io.src.buffer().data().data());
      net::const_buffer body(data, avail);
      if (!io.dst.TryWriteNow(prefix, body, result.wire_bytes, result.status)) {
        result.status = co_await io.dst.Write(prefix, body, result.wire_bytes);
      }
      if (!result.ok()) co_return result;
      prefix = {};
      io.src.buffer().consume(avail);
      result.body_bytes += avail;
    }
    if (io.src.lends()) {
      // As in RelayFixed.
      net::const_buffer lent;
      const RelayStatus s = co_await io.src.Lend(lent);
      if (s == RelayStatus::kSrcClosed) co_return result;  // the end of this body
      if (s != RelayStatus::kOk) {
        result.status = s;
        co_return result;
      }
      result.body_bytes += WriteLent(io, lent, lent.size(), result);
      if (!result.ok()) co_return result;
      continue;
    }
    const RelayStatus s = co_await io.src.ReadMore();
    if (s == RelayStatus::kSrcClosed) co_return result;  // the end of this body
    if (s != RelayStatus::kOk) {
      result.status = s;
      co_return result;
    }
  }
}

}  // namespace onedomain::dataplane

namespace onedomain::dataplane {

net::awaitable<RelayResult> RelayResponseBody(RelayIo io, const ResponseHead& head,
                                              net::const_buffer prefix, bool dechunk) {
  if (head.no_body) co_return co_await RelayFixed(io, 0, prefix);
  if (head.framing.chunked) {
    ChunkedScanner scanner;
    co_return co_await RelayChunked(io, scanner, prefix, 0, dechunk);
  }
  if (head.framing.content_length) {
    co_return co_await RelayFixed(io, *head.framing.content_length, prefix);
  }
  co_return co_await RelayUntilEof(io, prefix);
}

BufferedRelay TryRelayBuffered(RelayIo io, const ResponseHead& head, net::const_buffer& prefix) {
  BufferedRelay r;
  if (head.framing.chunked && !head.no_body) return r;
  if (!head.no_body && !head.framing.content_length) return r;
  const uint64_t length = head.no_body ? 0 : *head.framing.content_length;
  beast::flat_buffer& buf = io.src.buffer();
  if (buf.size() < length) return r;
  const auto len = static_cast<size_t>(length);
  if (len == 0 && prefix.size() == 0) {  // nothing to write (RelayFixed would write nothing)
    r.settled = true;
    return r;
  }
  net::const_buffer body(buf.data().data(), len);
  const bool settled = io.dst.TryWriteNow(prefix, body, r.result.wire_bytes, r.result.status);
  const size_t went = len - body.size();
  buf.consume(went);
  if (r.result.ok()) r.result.body_bytes = went;
  r.remaining = len - went;
  r.settled = settled;
  return r;
}

BufferedBody ProbeBufferedBody(const MessageFraming& framing, std::string_view body,
                               uint64_t limit) {
  BufferedBody b;
  if (framing.chunked) {
    ChunkedScanner probe;
    const ChunkedScanner::Result r = probe.Feed(body);
    if (r.error) {
      b.error = ProxyError{ProxyErrorKind::kMalformedRequest, "malformed chunked body"};
    } else if (limit != 0 && probe.data_bytes() > limit) {
      b.error = ProxyError{ProxyErrorKind::kBodyTooLarge, "chunked body exceeds the limit"};
    }
    b.complete = r.done;
    b.bytes = r.consumed;
  } else if (framing.content_length) {
    const uint64_t cl = *framing.content_length;
    b.complete = body.size() >= cl;
    b.bytes = static_cast<size_t>(std::min<uint64_t>(cl, body.size()));
  } else {
    b.complete = true;
  }
  return b;
}

}  // namespace onedomain::dataplane
