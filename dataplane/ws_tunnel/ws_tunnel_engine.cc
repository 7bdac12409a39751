// The WebSocket tunnel engine (ws_tunnel_engine.h): two callback pumps over NonBlockingStream,
// for plain and TLS streams alike.

#include "dataplane/ws_tunnel/ws_tunnel_engine.h"

#include <algorithm>
#include <boost/asio/ssl/error.hpp>
#include <utility>

#include "dataplane/ws_tunnel/ws_tunnel.h"

namespace onedomain::dataplane {
namespace {

bool WouldBlock(const error_code& ec) {
  return ec == net::error::would_block || ec == net::error::try_again;
}

}  // namespace

void WsTunnel::Out::Add(const void* p, size_t len) {
  if (len == 0) return;
  if (n > 0 && static_cast<const uint8_t*>(b[n - 1].data()) + b[n - 1].size() == p) {
    b[n - 1] = net::const_buffer(b[n - 1].data(), b[n - 1].size() + len);
  } else {
    b[n++] = net::const_buffer(p, len);
  }
  total += len;
}

WsTunnel::WsTunnel(WsTunnelSet& set, NonBlockingStream& client, NonBlockingStream& upstream,
                   stats::RouteCounters& counters, const WsTunnelPolicy& policy, WsTunnelDone& done)
    : set_(set),
      client_(client),
      upstream_(upstream),
      counters_(counters),
      done_(done),
      policy_(policy),
      timer_(set.dispatcher(), [this] { OnTimer(); }) {
  down_.to_client = true;

  opened_ = last_activity_ = last_ping_ = set_.dispatcher().Now();
  read_size_ = policy_.max_buffered_bytes == 0
                   ? WsTunnelSet::kScratchSize
                   : std::min<size_t>(policy_.max_buffered_bytes, WsTunnelSet::kScratchSize);
  if (policy_.max_lifetime.count() > 0) {
    // Closed at a random point of the lifetime's last drain_spread, never after it.
    lifetime_end_ = opened_ + policy_.max_lifetime -
                    set_.Jitter(std::min(policy_.drain_spread, policy_.max_lifetime));
  }
  counters_.websocket_active.Inc();
  set_.Add(this);
  Rearm(opened_);
}

WsTunnel::~WsTunnel() {
  // Destroyed before it completed: the worker is shutting down (its io_context destroys the
  // frame that owns us). Nothing runs any more; only leave the lists.
  if (!completed_) {
    client_.SetEventSink(nullptr);
    upstream_.SetEventSink(nullptr);
    if (is_linked()) set_.Remove(this);
  }
}

void WsTunnel::Start(std::string from_client, std::string from_upstream) {
  client_.SetEventSink(&client_hook_);
  upstream_.SetEventSink(&upstream_hook_);
  std::string* carry[2] = {&from_client, &from_upstream};
  Pump* pumps[2] = {&up_, &down_};
  for (int i = 0; i < 2; ++i) {
    Pump& p = *pumps[i];
    if (!carry[i]->empty() && !finished_) {
      Out out;
      const auto* d = reinterpret_cast<const uint8_t*>(carry[i]->data());
      Forward(p, d, carry[i]->size(), out);
      const Wrote w = Write(p, out);  // copies what dst cannot take now
      std::string().swap(*carry[i]);
      if (w == Wrote::kPending) continue;  // OnWritable goes on
      if (w == Wrote::kFailed) {
        WriteFailed(p);
        continue;
      }
    }
    if (finished_) {
      End(p);
      continue;
    }
    Run(p);
  }
}

// ---- timers, drain, injection --------------------------------------------------------------

void WsTunnel::OnTimer() {
  WsTunnel& t = *this;
  const Clock::time_point now = set_.dispatcher().Now();
  if (t.finished_) {
    t.timer_.Disarm();
    return;
  }
  if (t.drain_ == Drain::kScheduled && now >= t.drain_at_) t.StartDrain(now);
  if (t.drain_ == Drain::kDraining && now >= t.drain_at_) {
    // A side never finished its close handshake: close anyway.
    t.RecordFirstClose(stats::WsCloseInitiator::kProxy, 0);
    t.Finish();
    return;
  }
  const auto& idle = t.policy_.idle_timeout;
  const auto& keepalive = t.policy_.keepalive_interval;
  if (t.drain_ == Drain::kNone && idle.count() > 0 && now - t.last_activity_ >= idle) {
    t.ScheduleDrain(std::chrono::nanoseconds(0));
    t.StartDrain(now);
  }
  if (t.drain_ == Drain::kNone && now >= t.lifetime_end_) {  // max_lifetime
    t.ScheduleDrain(std::chrono::nanoseconds(0));
    t.StartDrain(now);
  }
  if (t.drain_ == Drain::kNone && keepalive.count() > 0 &&
      now - std::max(t.last_activity_, t.last_ping_) >= keepalive) {
    t.last_ping_ = now;
    t.RequestInject(t.down_, Inject::kPing);
  }
  t.Rearm(now);
}

void WsTunnel::Rearm(Clock::time_point now) {
  Clock::time_point next = Clock::time_point::max();
  const auto& idle = policy_.idle_timeout;
  const auto& keepalive = policy_.keepalive_interval;
  if (drain_ == Drain::kScheduled) next = std::min(next, drain_at_);
  if (drain_ == Drain::kDraining) next = std::min(next, drain_at_);
  if (drain_ == Drain::kNone && idle.count() > 0) next = std::min(next, last_activity_ + idle);
  if (drain_ == Drain::kNone) next = std::min(next, lifetime_end_);
  if (drain_ == Drain::kNone && keepalive.count() > 0) {
    next = std::min(next, std::max(last_activity_, last_ping_) + keepalive);
  }
  if (finished_ || next == Clock::time_point::max()) {
    timer_.Disarm();
    return;
  }
  timer_.ArmAt(std::max(next, now));
}

void WsTunnel::ScheduleDrain(std::chrono::nanoseconds delay) {
  if (drain_ != Drain::kNone || finished_) return;
  drain_ = Drain::kScheduled;
  const Clock::time_point now = set_.dispatcher().Now();
  drain_at_ = now + delay;
  counted_draining_ = true;
  set_.counters().websocket_drain_remaining.Inc();
  Rearm(now);
}

void WsTunnel::StartDrain(Clock::time_point now) {
  drain_ = Drain::kDraining;
  drain_at_ = now + policy_.drain_grace;
  RecordFirstClose(stats::WsCloseInitiator::kProxy, ws::kCloseGoingAway);
  RequestInject(down_, Inject::kClose);
  RequestInject(up_, Inject::kClose);
  if (HandshakesDone()) Finish();
}

// From the timer only (never inside a pump). A pump waiting for input at a boundary that
// allows the frame runs now and writes it; otherwise it injects at the next boundary it
// reaches, or after the write it waits on.
void WsTunnel::RequestInject(Pump& p, Inject kind) {
  if (finished_ || p.ended) return;
  if (kind == Inject::kClose && p.dst_got_close) {
    // dst already has a Close (forwarded); src's reply will follow through this pump.
    p.inject = Inject::kNone;
    return;
  }
  if (kind == Inject::kPing && p.inject == Inject::kClose) return;
  p.inject = kind;
  if (!p.waiting || !InjectReady(p)) return;
  p.waiting = false;
  Run(p);
}

void WsTunnel::Finish() {
  if (finished_) return;
  finished_ = true;
  timer_.Disarm();
  // Pumps that wait end here; a running one ends when it sees `finished_`.
  for (Pump* p : {&up_, &down_}) {
    if (!p->ended && (p->waiting || p->writing)) {
      p->waiting = p->writing = false;
      End(*p);
    }
  }
}

void WsTunnel::RecordFirstClose(stats::WsCloseInitiator who, int code) {
  if (close_recorded_) return;
  close_recorded_ = true;
  counters_.ws.RecordClose(who, code);
}

stats::WsCloseInitiator WsTunnel::SourceSide(const Pump& p) {
  return p.to_client ? stats::WsCloseInitiator::kUpstream : stats::WsCloseInitiator::kClient;
}

stats::WsCloseInitiator WsTunnel::DestinationSide(const Pump& p) {
  return p.to_client ? stats::WsCloseInitiator::kClient : stats::WsCloseInitiator::kUpstream;
}

bool WsTunnel::HandshakesDone() const {
  return up_.src_sent_close && up_.dst_got_close && down_.src_sent_close && down_.dst_got_close;
}

// ---- the pumps ------------------------------------------------------------------------------

void WsTunnel::OnReadable(Pump& p) {
  if (!p.waiting || p.ended || finished_) return;  // the stream remembers it is readable
  p.waiting = false;
  Run(p);
}

void WsTunnel::OnWritable(Pump& p) {
  if (!p.writing || p.ended || finished_) return;
  WriteMore(p);
}

void WsTunnel::Run(Pump& p) {
  uint8_t* const scratch = set_.scratch();
  while (!finished_) {
    if (p.inject != Inject::kNone && !p.absorbing && InjectReady(p)) {
      Out out;
      ApplyInject(p, out);
      const Wrote w = Write(p, out);
      if (w == Wrote::kPending) return;
      if (w == Wrote::kFailed) return WriteFailed(p);
    }
    if (drain_ != Drain::kNone && HandshakesDone()) {
      Finish();
      break;
    }
    if (!Src(p).maybe_readable()) {
      p.waiting = true;  // OnReadable resumes
      return;
    }
    error_code ec;
    const size_t n = Src(p).TryRead(net::buffer(scratch, read_size_), ec);
    if (WouldBlock(ec)) {
      p.waiting = true;
      return;
    }
    if (ec == net::error::eof || ec == net::ssl::error::stream_truncated) {
      HalfClose(p);
      break;
    }
    if (ec) {
      RecordFirstClose(SourceSide(p), 0);
      Finish();
      break;
    }
    last_activity_ = set_.dispatcher().Now();
    Out out;
    Forward(p, scratch, n, out);
    const Wrote w = Write(p, out);
    if (w == Wrote::kPending) return;
    if (w == Wrote::kFailed) return WriteFailed(p);
  }
  End(p);
}

bool WsTunnel::InjectReady(const Pump& p) {
  if (p.tracker.broken()) return false;
  return p.inject == Inject::kClose ? p.tracker.AtMessageBoundary() : p.tracker.AtFrameBoundary();
}

void WsTunnel::ApplyInject(Pump& p, Out& out) {
  // Masked toward the upstream: the proxy is the client there (RFC 6455 5.3).
  out.frame = p.inject == Inject::kClose
                  ? ws::BuildCloseFrame(ws::kCloseGoingAway, !p.to_client, set_.MaskKey())
                  : ws::BuildPingFrame();
  out.Add(out.frame.bytes.data(), out.frame.size);
  if (p.inject == Inject::kClose) {
    p.dst_got_close = true;
    p.absorbing = true;
  } else {
    ++up_.pongs_to_absorb;  // the client answers our ping with a pong upstream must not see
  }
  p.inject = Inject::kNone;
}

void WsTunnel::OnCloseFromSrc(Pump& p, bool dropped) {
  p.src_sent_close = true;
  if (!dropped) p.dst_got_close = true;
  RecordFirstClose(SourceSide(p), p.tracker.last_frame().close_code);
}

// Walks a chunk read from src: counts it, forwards it (into `out`, pointing into `data`),
// drops what must not reach dst (frames after our Close, pongs answering our pings), and
// injects our frame at the first boundary that allows it. Reads frame headers only.
void WsTunnel::Forward(Pump& p, const uint8_t* data, size_t n, Out& out) {
  if (p.to_client) {
    counters_.websocket_bytes_to_client.Add(n);
    set_.counters().bytes_sent.Add(n);
  } else {
    counters_.websocket_bytes_to_upstream.Add(n);
    set_.counters().bytes_received.Add(n);
  }
  size_t i = 0;
  while (i < n) {
    if (p.tracker.AtFrameBoundary() && !p.absorbing) {
      if (p.inject != Inject::kNone && InjectReady(p)) {
        ApplyInject(p, out);
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
    if (p.tracker.closes() > closes_before) OnCloseFromSrc(p, drop);
  }
  if (p.inject != Inject::kNone && !p.absorbing && InjectReady(p)) ApplyInject(p, out);
}

// Writes `out` to dst straight from where it lies (the scratch buffer) as far as dst takes it;
// the rest is copied to the pump's pending buffer, written on OnWritable.
WsTunnel::Wrote WsTunnel::Write(Pump& p, const Out& out) {
  if (out.total == 0) return Wrote::kAll;
  error_code ec;
  size_t written = Dst(p).TryWrite(out.b.data(), out.n, ec);
  if (WouldBlock(ec)) {
    written = 0;
  } else if (ec) {
    return Wrote::kFailed;
  }
  if (written == out.total) return Wrote::kAll;
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
  p.writing = true;
  counters_.websocket_paused[p.to_client ? 1 : 0].Add();
  return Wrote::kPending;
}

void WsTunnel::WriteMore(Pump& p) {
  while (p.pending_off < p.pending_len) {
    error_code ec;
    const net::const_buffer rest(p.pending.get() + p.pending_off, p.pending_len - p.pending_off);
    const size_t n = Dst(p).TryWrite(&rest, 1, ec);
    if (WouldBlock(ec)) return;  // OnWritable again
    if (ec) {
      p.writing = false;
      p.pending.reset();
      return WriteFailed(p);
    }
    p.pending_off += static_cast<uint32_t>(n);
  }
  p.writing = false;
  p.pending.reset();
  Run(p);
}

// dst failed: it is gone, so is the tunnel.
void WsTunnel::WriteFailed(Pump& p) {
  if (!finished_) {
    RecordFirstClose(DestinationSide(p), 0);
    Finish();
  }
  End(p);
}

// src ended: dst's send side is shut (TLS: close_notify first), the other direction goes on.
// During a drain the tunnel ends instead.
void WsTunnel::HalfClose(Pump& p) {
  if (!p.src_sent_close) RecordFirstClose(SourceSide(p), 0);
  if (drain_ != Drain::kNone) {
    Finish();
    return;
  }
  Dst(p).ShutdownSend();  // the peer may be gone; the other direction notices on its own
}

void WsTunnel::End(Pump& p) {
  if (p.ended) return;
  p.ended = true;
  p.pending.reset();
  if (--running_ == 0) Complete();
}

void WsTunnel::Complete() {
  completed_ = true;
  finished_ = true;
  timer_.Disarm();
  client_.SetEventSink(nullptr);
  upstream_.SetEventSink(nullptr);
  set_.Remove(this);
  if (counted_draining_) set_.counters().websocket_drain_remaining.Dec();
  counters_.websocket_active.Dec();
  RecordFirstClose(stats::WsCloseInitiator::kProxy, 0);
  counters_.ws.RecordDuration(
      std::chrono::duration<double>(set_.dispatcher().Now() - opened_).count());
  done_.OnTunnelDone();
}

}  // namespace onedomain::dataplane
