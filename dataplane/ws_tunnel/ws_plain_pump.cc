// The pumps of a plain client's WebSocket tunnel. Both its streams are on the worker's
// EdgePoller and delegate their events here, so the pumps are callbacks rather than
// coroutines: each message costs one recv and one send, and an idle tunnel holds no coroutine
// frame, buffer or pending operation per direction. Same steps as the coroutine PumpLoop in
// ws_tunnel.cc.

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/asio/post.hpp>
#include <algorithm>

#include "dataplane/ws_tunnel/ws_tunnel_internal.h"

namespace onedomain::dataplane::ws_internal {

void PlainEnd(WsTunnel& t, WsPump& p) {
  p.ended = true;
  p.pending.reset();
  // Posted: never resumes RunWsTunnel (and frees `t`) under our feet.
  if (--t.plain_running == 0) t.done.Post({});
}

namespace {

void OnPlainWritten(WsTunnel& t, WsPump& p, bool ok) {
  switch (p.after_write) {
    case AfterWrite::kCarry:
      if (!ok) t.Finish();
      break;
    case AfterWrite::kInject:
      if (!ok) return PlainEnd(t, p);
      break;
    case AfterWrite::kData:
      if (!ok) {
        if (!t.finished) {
          t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kClient
                                         : stats::WsCloseInitiator::kUpstream, 0);
          t.Finish();
        }
        return PlainEnd(t, p);
      }
      break;
  }
  if (t.finished) return PlainEnd(t, p);
  PlainLoop(t, p);
}

// Writes the rest of `pending` as far as dst takes it; parks until writable otherwise.
void PlainWriteMore(WsTunnel& t, WsPump& p) {
  while (p.pending_off < p.pending_len) {
    const ssize_t k = ::send(p.dst_fd, p.pending.get() + p.pending_off,
                             p.pending_len - p.pending_off, MSG_NOSIGNAL);
    if (k >= 0) {
      p.pending_off += static_cast<uint32_t>(k);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      p.write_parked = true;
      return;
    }
    p.writing = false;
    p.pending.reset();
    return OnPlainWritten(t, p, false);
  }
  p.writing = false;
  p.pending.reset();
  OnPlainWritten(t, p, !t.finished);
}

// Writes `out` to p.dst as far as the socket takes it now. Returns 0 when all of it went,
// 1 when the rest was copied and waits for dst to become writable (OnPlainWritten follows),
// -1 on failure.
int PlainWrite(WsPump& p, const Out& out, AfterWrite next) {
  if (out.total == 0) return 0;
  iovec iov[4];
  for (size_t i = 0; i < out.n; ++i) {
    iov[i].iov_base = const_cast<void*>(out.b[i].data());
    iov[i].iov_len = out.b[i].size();
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = out.n;
  ssize_t k;
  do {
    k = ::sendmsg(p.dst_fd, &msg, MSG_NOSIGNAL);
  } while (k < 0 && errno == EINTR);
  size_t written = 0;
  if (k >= 0) {
    written = static_cast<size_t>(k);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    return -1;
  }
  if (written == out.total) return 0;
  const size_t rest = out.total - written;
  p.pending.reset(new uint8_t[rest]);
  size_t skip = written, at = 0;
  for (size_t i = 0; i < out.n; ++i) {
    const auto* d = static_cast<const uint8_t*>(out.b[i].data());
    const size_t len = out.b[i].size();
    if (skip >= len) {
      skip -= len;
      continue;
    }
    std::copy(d + skip, d + len, p.pending.get() + at);
    at += len - skip;
    skip = 0;
  }
  p.pending_len = static_cast<uint32_t>(rest);
  p.pending_off = 0;
  p.after_write = next;
  p.writing = true;
  p.write_parked = true;  // dst's buffer is full: its next writable edge continues
  return 1;
}

}  // namespace

// Runs the pump until it must wait (for readability, or for a write pending) or ends.
void PlainLoop(WsTunnel& t, WsPump& p) {
  uint8_t* const scratch = t.set.scratch();
  while (!t.finished) {
    if (p.inject != Inject::kNone && !p.absorbing && InjectReady(p)) {
      Out out;
      ApplyInject(t, p, out);
      const int r = PlainWrite(p, out, AfterWrite::kInject);
      if (r > 0) return;
      if (r < 0) break;
    }
    if (t.drain != WsTunnel::Drain::kNone && t.HandshakesDone()) {
      t.Finish();
      break;
    }
    if (!p.maybe_readable) {
      // The last read was short: the socket is drained, and the poller reports new bytes
      // (edge-triggered) without a recv that would find nothing.
      p.waiting = true;
      return;
    }
    const ssize_t k = ::recv(p.src_fd, scratch, WsTunnelSet::kScratchSize, 0);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        p.maybe_readable = false;
        continue;
      }
      t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kUpstream
                                     : stats::WsCloseInitiator::kClient, 0);
      t.Finish();
      break;
    }
    if (k == 0) {
      HalfClose(t, p);
      break;
    }
    const auto n = static_cast<size_t>(k);
    p.maybe_readable = n == WsTunnelSet::kScratchSize || p.src_hup;
    t.last_activity = t.worker.Now();
    CountBytes(p, n);
    Out out;
    Process(t, p, scratch, n, out);
    const int r = PlainWrite(p, out, AfterWrite::kData);
    if (r > 0) return;
    if (r < 0) {
      if (!t.finished) {
        t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kClient
                                       : stats::WsCloseInitiator::kUpstream, 0);
        t.Finish();
      }
      break;
    }
  }
  PlainEnd(t, p);
}

void OnFdEvents(void* ctx, uint32_t events) {
  const FdWatch& w = *static_cast<FdWatch*>(ctx);
  WsTunnel& t = *w.tunnel;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    WsPump& r = *w.reader;
    r.maybe_readable = true;  // remembered when the pump is busy writing
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) r.src_hup = true;
    if (r.waiting && !r.ended && !t.finished) {
      r.waiting = false;
      PlainLoop(t, r);
    }
  }
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
    WsPump& wr = *w.writer;
    if (wr.write_parked && !wr.ended && !t.finished) {
      wr.write_parked = false;
      PlainWriteMore(t, wr);
    }
  }
}

void PlainStart(WsTunnel& t, WsPump& p) {
  if (!p.carry.empty()) {
    Out out;
    const auto* d = reinterpret_cast<const uint8_t*>(p.carry.data());
    Process(t, p, d, p.carry.size(), out);
    CountBytes(p, p.carry.size());
    const int r = PlainWrite(p, out, AfterWrite::kCarry);  // copies what it cannot write
    std::string().swap(p.carry);
    if (r > 0) return;
    if (r < 0) t.Finish();
  }
  if (t.finished) return PlainEnd(t, p);
  PlainLoop(t, p);
}

}  // namespace onedomain::dataplane::ws_internal
