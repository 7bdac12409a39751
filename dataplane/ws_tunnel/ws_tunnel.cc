#include "dataplane/ws_tunnel/ws_tunnel.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <array>
#include <optional>
#include <string>

#include "dataplane/net/any_stream.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/ws_tunnel/ws_frames.h"
#include "dataplane/ws_tunnel/ws_tunnel_internal.h"
#include "dataplane/ws_tunnel/ws_handoff.h"

namespace onedomain::dataplane {

using namespace boost::asio::experimental::awaitable_operators;  // NOLINT: operator&&
using namespace ws_internal;                                       // NOLINT: this file's own
namespace {

// TCP keepalive on both sockets: a peer that vanished without a FIN is noticed within
// about two minutes instead of Linux's default two hours.
constexpr int kKeepIdleSeconds = 60;
constexpr int kKeepIntervalSeconds = 10;
constexpr int kKeepCount = 6;

void EnableKeepalive(int fd) {
  // Failures only lose dead-peer detection; the tunnel works without it.
  if (fd < 0) return;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepIdleSeconds, sizeof(int));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepIntervalSeconds, sizeof(int));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepCount, sizeof(int));
}

}  // namespace

WsTunnelSet::WsTunnelSet(stats::WorkerCounters& counters)
    : counters_(counters), scratch_(new uint8_t[kScratchSize]), rng_(std::random_device{}()) {}

WsTunnelSet::~WsTunnelSet() = default;

void WsTunnelSet::Add(WsTunnel* t) {
  t->prev = nullptr;
  t->next = head_;
  if (head_ != nullptr) head_->prev = t;
  head_ = t;
  ++count_;
  if (draining_) t->ScheduleDrain(std::chrono::nanoseconds(0));
}

void WsTunnelSet::Remove(WsTunnel* t) {
  if (t->prev != nullptr) {
    t->prev->next = t->next;
  } else {
    head_ = t->next;
  }
  if (t->next != nullptr) t->next->prev = t->prev;
  t->prev = t->next = nullptr;
  --count_;
}

std::chrono::nanoseconds WsTunnelSet::Jitter(std::chrono::nanoseconds window) {
  if (window.count() <= 0) return window.zero();
  std::uniform_int_distribution<int64_t> d(0, window.count());
  return std::chrono::nanoseconds(d(rng_));
}

void WsTunnelSet::DrainAll() {
  draining_ = true;
  for (WsTunnel* t = head_; t != nullptr; t = t->next) {
    t->ScheduleDrain(Jitter(t->spread));
  }
}

void WsTunnelSet::OnConfigSwitch(const CompiledSnapshot& snapshot) {
  if (head_ == nullptr) return;
  std::vector<uint32_t> live;
  for (const CompiledRoute& r : snapshot.routes->routes()) {
    if (r.websocket) live.push_back(r.stats_slot);
  }
  for (WsTunnel* t = head_; t != nullptr; t = t->next) {
    if (std::find(live.begin(), live.end(), t->route_slot) == live.end()) {
      t->ScheduleDrain(Jitter(t->spread));
    }
  }
}

namespace ws_internal {

// ---- timers, drain, injection ----------------------------------------------------------------

void WsTunnel::OnTimer() {
  WsTunnel* t = this;
  const Clock::time_point now = worker.Now();
  if (t->finished) {
    t->timer.Disarm();
    return;
  }
  if (t->drain == Drain::kScheduled && now >= t->drain_at) t->StartDrain(now);
  if (t->drain == Drain::kDraining && now >= t->grace_end) {
    // A side never finished its close handshake: close anyway.
    t->RecordFirstClose(stats::WsCloseInitiator::kProxy, 0);
    t->Finish();
    t->timer.Disarm();
    return;
  }
  if (t->drain == Drain::kNone && t->idle.count() > 0 && now - t->last_activity >= t->idle) {
    t->ScheduleDrain(std::chrono::nanoseconds(0));
    t->StartDrain(now);
  }
  if (t->drain == Drain::kNone && t->keepalive.count() > 0 &&
      now - std::max(t->last_activity, t->last_ping) >= t->keepalive) {
    t->last_ping = now;
    t->RequestInject(t->down, Inject::kPing);
  }
  t->Rearm(now);
}

void WsTunnel::Rearm(Clock::time_point now) {
  Clock::time_point next = Clock::time_point::max();
  if (drain == Drain::kScheduled) next = std::min(next, drain_at);
  if (drain == Drain::kDraining) next = std::min(next, grace_end);
  if (drain == Drain::kNone && idle.count() > 0) next = std::min(next, last_activity + idle);
  if (drain == Drain::kNone && keepalive.count() > 0) {
    next = std::min(next, std::max(last_activity, last_ping) + keepalive);
  }
  if (next == Clock::time_point::max()) {
    timer.Disarm();
    return;
  }
  timer.ArmAt(std::max(next, now));
}

void WsTunnel::ScheduleDrain(std::chrono::nanoseconds delay) {
  if (drain != Drain::kNone || finished) return;
  drain = Drain::kScheduled;
  const Clock::time_point now = worker.Now();
  drain_at = now + delay;
  counted_draining = true;
  set.counters().websocket_drain_remaining.Inc();
  Rearm(now);
}

void WsTunnel::StartDrain(Clock::time_point now) {
  drain = Drain::kDraining;
  grace_end = now + grace;
  RecordFirstClose(stats::WsCloseInitiator::kProxy, ws::kCloseGoingAway);
  RequestInject(down, Inject::kClose);
  RequestInject(up, Inject::kClose);
  if (HandshakesDone()) Finish();
}

// Writes `p`'s injection now when the pump is parked and its destination is a plain socket
// that takes the frame whole; otherwise leaves it to the pump (waking it when it waits on a
// plain socket) — the pump injects at the next boundary it reaches.
void WsTunnel::RequestInject(WsPump& p, Inject kind) {
  if (finished || p.ended) return;
  if (kind == Inject::kClose && p.dst_got_close) {
    // dst already has a Close (forwarded); src's reply will follow through this pump.
    p.inject = Inject::kNone;
    return;
  }
  if (kind == Inject::kPing && p.inject == Inject::kClose) return;
  p.inject = kind;
  p.inject_frame = kind == Inject::kClose
                       ? ws::BuildCloseFrame(ws::kCloseGoingAway, !p.to_client, set.MaskKey())
                       : ws::BuildPingFrame();
  if (p.writing || !p.waiting) return;  // the pump looks again after its write
  const bool ready = kind == Inject::kClose ? p.tracker.AtMessageBoundary()
                                            : p.tracker.AtFrameBoundary();
  if (!ready || p.tracker.broken()) return;  // the rest of the message will come first
  if (!p.dst_tls) {
    error_code ec;
    size_t n = 0;
    if (plain) {
      const ssize_t k =
          ::send(p.dst_fd, p.inject_frame.bytes.data(), p.inject_frame.size, MSG_NOSIGNAL);
      if (k >= 0) {
        n = static_cast<size_t>(k);
      } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        ec = net::error::would_block;
      } else {
        ec = error_code(errno, boost::system::system_category());
      }
    } else {
      const net::const_buffer frame(p.inject_frame.bytes.data(), p.inject_frame.size);
      n = p.dst->TryWrite(&frame, 1, ec);
    }
    if (!ec && n == p.inject_frame.size) {
      if (kind == Inject::kClose) {
        p.dst_got_close = true;
        p.absorbing = true;
      } else {
        ++up.pongs_to_absorb;
      }
      p.inject = Inject::kNone;
      return;
    }
    if (!ec && n > 0) {
      // A partial small frame: nothing else may be written before its rest, which the pump
      // cannot know. Give up on a clean close; the grace timer closes the tunnel.
      p.inject = Inject::kNone;
      return;
    }
  }
  if (plain) {
    // Wake the pump: it injects now. (Called from the timer, never from inside a pump.)
    p.waiting = false;
    PlainLoop(*this, p);
  } else {
    // Wake the coroutine pump: its wait ends with operation_aborted and it injects. The
    // other pump may have a write to this socket pending; its write loop retries after an
    // abort (TLS too: the retry passes the same bytes, as OpenSSL requires).
    p.src->Cancel();
  }
}

void WsTunnel::Finish() {
  if (finished) return;
  finished = true;
  timer.Disarm();
  if (plain) {
    // Pumps parked on the poller end here; a running one ends when it sees `finished`.
    for (WsPump* p : {&up, &down}) {
      if (!p->ended && (p->waiting || p->write_parked)) {
        p->waiting = p->write_parked = p->writing = false;
        PlainEnd(*this, *p);
      }
    }
    return;
  }
  client.Cancel();
  upstream->stream().Cancel();
}

// ---- the pumps ----------------------------------------------------------------------------


bool InjectReady(const WsPump& p) {
  if (p.tracker.broken()) return false;
  return p.inject == Inject::kClose ? p.tracker.AtMessageBoundary() : p.tracker.AtFrameBoundary();
}

void ApplyInject(WsTunnel& t, WsPump& p, Out& out) {
  out.Add(p.inject_frame.bytes.data(), p.inject_frame.size);
  if (p.inject == Inject::kClose) {
    p.dst_got_close = true;
    p.absorbing = true;
  } else {
    ++t.up.pongs_to_absorb;
  }
  p.inject = Inject::kNone;
}

namespace {

void OnCloseFromSrc(WsTunnel& t, WsPump& p, bool dropped) {
  p.src_sent_close = true;
  if (!dropped) p.dst_got_close = true;
  t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kUpstream
                                 : stats::WsCloseInitiator::kClient,
                     p.tracker.last_frame().close_code);
}

}  // namespace

// Walks a chunk read from src: forwards it (into `out`, pointing into `data`), drops what
// must not reach dst (frames after our Close, pongs answering our pings), and injects our
// frame at the first boundary that allows it. Reads frame headers only.
void Process(WsTunnel& t, WsPump& p, const uint8_t* data, size_t n, Out& out) {
  size_t i = 0;
  while (i < n) {
    if (p.tracker.AtFrameBoundary() && !p.absorbing) {
      if (p.inject != Inject::kNone && InjectReady(p)) {
        ApplyInject(t, p, out);
        continue;
      }
      if (p.pongs_to_absorb > 0 && (data[i] & 0x0F) == ws::kPong) {
        p.dropping = true;
        --p.pongs_to_absorb;
      }
    }
    const bool per_frame =
        p.absorbing || p.dropping || p.inject != Inject::kNone || p.pongs_to_absorb > 0;
    const uint64_t closes_before = p.tracker.closes();
    const size_t k = p.tracker.Consume(data + i, n - i, per_frame);
    const bool drop = p.absorbing || p.dropping;
    if (!drop) out.Add(data + i, k);
    i += k;
    if (p.tracker.AtFrameBoundary()) p.dropping = false;
    if (p.tracker.closes() > closes_before) OnCloseFromSrc(t, p, drop);
  }
  if (p.inject != Inject::kNone && !p.absorbing && InjectReady(p)) ApplyInject(t, p, out);
}

namespace {

// Writes `out` to p.dst. Plain: straight from where it lies (the scratch buffer) as far as
// the socket takes it, the rest copied to a buffer of its own for an asynchronous write
// (back-pressure: the pump reads again only after). TLS: copied, then written.
net::awaitable<bool> WriteOut(WsTunnel& t, WsPump& p, const Out& out) {
  if (out.total == 0) co_return true;
  size_t written = 0;
  if (!p.dst_tls) {
    error_code ec;
    written = p.dst->TryWrite(out.b.data(), out.n, ec);
    if (ec && ec != net::error::would_block && ec != net::error::try_again) co_return false;
    if (ec) written = 0;
    if (written == out.total) co_return true;
  }
  const size_t rest = out.total - written;
  std::unique_ptr<uint8_t[]> copy(new uint8_t[rest]);
  {
    size_t skip = written, at = 0;
    for (size_t i = 0; i < out.n; ++i) {
      const auto* d = static_cast<const uint8_t*>(out.b[i].data());
      size_t len = out.b[i].size();
      if (skip >= len) {
        skip -= len;
        continue;
      }
      std::copy(d + skip, d + len, copy.get() + at);
      at += len - skip;
      skip = 0;
    }
  }
  p.writing = true;
  size_t off = 0;
  bool ok = true;
  while (off < rest) {
    const IoResult r = co_await p.dst->Write(net::buffer(copy.get() + off, rest - off));
    off += r.n;
    if (r.ec == net::error::operation_aborted && !t.finished) continue;  // woken, not ended
    if (r.ec) {
      ok = false;
      break;
    }
  }
  p.writing = false;
  co_return ok && !t.finished;
}

}  // namespace

void CountBytes(WsPump& p, size_t n) {
  p.bytes->Add(n);
  p.worker_bytes->Add(n);
}

// Ends this direction after src's end of stream: half-close dst when it is plain TCP; a TLS
// client gets the whole tunnel closed (the session then sends close_notify).
void HalfClose(WsTunnel& t, WsPump& p) {
  if (!p.src_sent_close) {
    t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kUpstream
                                   : stats::WsCloseInitiator::kClient,
                       0);
  }
  if (t.drain != WsTunnel::Drain::kNone || p.dst_tls) {
    t.Finish();
    return;
  }
  if (t.plain) {
    ::shutdown(p.dst_fd, SHUT_WR);  // the peer may be gone; the other direction notices
    return;
  }
  p.dst->ShutdownSend();  // the peer may be gone; the other direction notices on its own
}

namespace {

net::awaitable<void> PumpLoop(WsTunnel& t, WsPump& p) {
  uint8_t* const scratch = t.set.scratch();
  if (!p.carry.empty()) {
    Out out;
    const auto* d = reinterpret_cast<const uint8_t*>(p.carry.data());
    Process(t, p, d, p.carry.size(), out);
    CountBytes(p, p.carry.size());
    if (!co_await WriteOut(t, p, out)) {
      t.Finish();
    }
    std::string().swap(p.carry);
  }
  while (!t.finished) {
    if (p.inject != Inject::kNone && !p.absorbing && InjectReady(p)) {
      Out out;
      ApplyInject(t, p, out);
      if (!co_await WriteOut(t, p, out)) break;
    }
    if (t.drain != WsTunnel::Drain::kNone && t.HandshakesDone()) {
      t.Finish();
      break;
    }
    const uint8_t* data = nullptr;
    size_t n = 0;
    error_code ec;
    if (p.maybe_readable) {
      n = p.src->TryRead(net::buffer(scratch, WsTunnelSet::kScratchSize), ec);
    } else {
      ec = net::error::would_block;
    }
    p.maybe_readable = n == WsTunnelSet::kScratchSize;
    if (ec == net::error::would_block || ec == net::error::try_again) {
      // Nothing is held while waiting: an idle tunnel keeps no read buffer (TLS included).
      p.maybe_readable = true;  // after the wait, read
      p.waiting = true;
      const error_code wec = co_await p.src->WaitReadable();
      p.waiting = false;
      if (t.finished) break;
      if (wec && wec != net::error::operation_aborted) {
        t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kUpstream
                                       : stats::WsCloseInitiator::kClient, 0);
        t.Finish();
        break;
      }
      continue;  // readable, or woken to inject
    }
    data = scratch;
    if (ec == net::error::eof || ec == net::ssl::error::stream_truncated) {
      HalfClose(t, p);
      break;
    }
    if (ec) {
      t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kUpstream
                                     : stats::WsCloseInitiator::kClient, 0);
      t.Finish();
      break;
    }
    t.last_activity = t.worker.Now();
    CountBytes(p, n);
    Out out;
    Process(t, p, data, n, out);
    if (!co_await WriteOut(t, p, out)) {
      if (!t.finished) {
        t.RecordFirstClose(p.to_client ? stats::WsCloseInitiator::kClient
                                       : stats::WsCloseInitiator::kUpstream, 0);
        t.Finish();
      }
      break;
    }
  }
  p.ended = true;
}

}  // namespace

}  // namespace ws_internal

net::awaitable<void> RunWsTunnel(AnyStream& client, Worker& worker,
                                 std::unique_ptr<WsHandoff> handoff) {
  WsTunnel t(worker, client, nullptr);
  t.upstream = std::move(handoff->upstream);
  t.counters = handoff->counters;
  t.route_slot = handoff->route_slot;
  t.idle = handoff->idle_timeout;
  t.keepalive = handoff->keepalive_interval;
  t.grace = handoff->drain_grace;
  t.spread = handoff->drain_spread;
  AnyStream& upstream = t.upstream->stream();

  t.up.src = &client;
  t.up.dst = &upstream;
  t.up.carry = std::move(handoff->from_client);
  t.up.bytes = &t.counters->websocket_bytes_to_upstream;
  t.up.worker_bytes = &worker.counters().bytes_received;
  t.down.src = &upstream;
  t.down.dst = &client;
  t.down.to_client = true;
  t.down.dst_tls = client.is_tls();
  t.down.carry = std::move(handoff->from_upstream);
  t.down.bytes = &t.counters->websocket_bytes_to_client;
  t.down.worker_bytes = &worker.counters().bytes_sent;
  handoff.reset();

  EnableKeepalive(client.native_handle());
  EnableKeepalive(upstream.native_handle());

  t.opened = t.last_activity = t.last_ping = t.worker.Now();
  t.counters->websocket_active.Inc();
  t.set.Add(&t);
  t.Rearm(t.opened);

  // Plain client (the upstream always is): both streams' poller events come to the callback
  // pumps until the tunnel ends (the session and the upstream connection still own them).
  if (!client.is_tls() && !upstream.is_tls()) {
    t.plain = true;
    t.up.src_fd = t.down.dst_fd = client.native_handle();
    t.up.dst_fd = t.down.src_fd = upstream.native_handle();
    t.up.src_hup = client.read_hup();
    t.down.src_hup = upstream.read_hup();
    t.client_watch = FdWatch{&t, &t.up, &t.down};
    t.upstream_watch = FdWatch{&t, &t.down, &t.up};
    client.Delegate(&OnFdEvents, &t.client_watch);
    upstream.Delegate(&OnFdEvents, &t.upstream_watch);
  }

  if (!t.plain) {
    co_await (PumpLoop(t, t.up) && PumpLoop(t, t.down));
  } else {
    t.plain_running = 2;
    PlainStart(t, t.up);
    PlainStart(t, t.down);
    if (t.plain_running != 0) (void)co_await t.done.Wait();  // only PlainEnd resumes it
  }

  t.timer.Disarm();
  t.set.Remove(&t);
  if (t.counted_draining) t.set.counters().websocket_drain_remaining.Dec();
  t.counters->websocket_active.Dec();
  t.RecordFirstClose(stats::WsCloseInitiator::kProxy, 0);
  t.counters->ws.RecordDuration(std::chrono::duration<double>(t.worker.Now() - t.opened).count());
  if (t.plain) {
    client.Delegate(nullptr, nullptr);
    upstream.Delegate(nullptr, nullptr);
  }
}

}  // namespace onedomain::dataplane
