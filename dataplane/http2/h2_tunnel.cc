#include "dataplane/http2/h2_connection.h"

#include <algorithm>
#include <boost/asio/error.hpp>
#include <memory>
#include <utility>

#include "dataplane/http_proxy/session_context.h"
#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/upstream/upstream_connection.h"
#include "dataplane/worker/worker.h"
#include "dataplane/ws_tunnel/ws_handoff.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "dataplane/ws_tunnel/ws_tunnel_engine.h"

namespace onedomain::dataplane::h2 {
namespace {

// An RFC 8441 tunnel's client side: the stream's DATA as a NonBlockingStream for the tunnel
// engine. Reads take from the stream's buffer (and give the window back); writes queue for
// the data provider up to kTunnelOutLimit; events come from Connection::DeliverEvents.
class H2TunnelStream final : public NonBlockingStream {
 public:
  explicit H2TunnelStream(Stream& s) : s_(s) {}
  ~H2TunnelStream() { s_.ws_sink = nullptr; }

  size_t TryRead(net::mutable_buffer buf, error_code& ec) override {
    ec = {};
    if (s_.in.size() == 0) s_.TakeArriving();
    if (s_.in.size() > 0) {
      const size_t n = net::buffer_copy(buf, s_.in.data());
      s_.in.consume(n);
      s_.conn.ConsumeTunnel(s_, n);
      return n;
    }
    if (s_.in.capacity() > 2 * kInitialReadSize) s_.in.shrink_to_fit();  // idle: no buffer
    if (s_.arriving.capacity() > 2 * kInitialReadSize) s_.arriving.shrink_to_fit();
    if (s_.end_in) {
      ec = net::error::eof;
    } else if (s_.closed) {
      ec = net::error::connection_reset;
    } else {
      ec = net::error::would_block;
    }
    return 0;
  }
  size_t TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec) override {
    ec = {};
    if (s_.closed || s_.out_eof) {
      ec = net::error::broken_pipe;
      return 0;
    }
    if (s_.out_off == s_.out.size()) {
      s_.out.clear();
      s_.out_off = 0;
    }
    size_t room = kTunnelOutLimit > s_.out_pending() ? kTunnelOutLimit - s_.out_pending() : 0;
    if (room == 0) {
      ec = net::error::would_block;
      return 0;
    }
    size_t taken = 0;
    for (size_t i = 0; i < count && room > 0; ++i) {
      const size_t n = std::min(room, bufs[i].size());
      s_.out.append(static_cast<const char*>(bufs[i].data()), n);
      taken += n;
      room -= n;
    }
    s_.conn.ResumeData(s_);
    return taken;
  }
  void ShutdownSend() override {
    if (s_.out_eof) return;
    s_.out_eof = true;
    s_.conn.ResumeData(s_);
  }
  bool maybe_readable() const override {
    return s_.in.size() > 0 || s_.arriving.size() > 0 || s_.end_in || s_.closed;
  }
  void SetEventSink(StreamEvents* sink) override {
    s_.ws_sink = sink;
    if (sink != nullptr && maybe_readable()) {
      s_.ev_read = true;
      s_.conn.OweEvents();
    }
  }

 private:
  Stream& s_;
};

// Resumes ServeTunnel once the engine is done (posted: never under the engine's feet).
struct TunnelDone final : WsTunnelDone {
  explicit TunnelDone(Dispatcher& dispatcher) : parked(dispatcher) {}
  void OnTunnelDone() override { parked.Post({}); }
  Parked parked;
};

// The tunnel on a stream whose upstream answered 101: the same engine as HTTP/1.1 upgrades
// (frame tracking, idle timeout, keepalive pings, drain with Close 1001).

}  // namespace

net::awaitable<void> RunTunnel(Stream& s, std::unique_ptr<WsHandoff> handoff) {
  Connection& c = s.conn;
  const std::unique_ptr<UpstreamConnection> upstream = std::move(handoff->upstream);
  s.conn.Consume(s);  // what arrived before the 200 is in the handoff
  H2TunnelStream client(s);
  TunnelDone done(c.worker().dispatcher());
  const WsTunnelPolicy policy{handoff->route_slot, handoff->idle_timeout,
                              handoff->keepalive_interval, handoff->drain_grace,
                              handoff->drain_spread};
  WsTunnel tunnel(c.worker().ws_tunnels(), client, upstream->stream(), *handoff->counters, policy,
                  done);
  tunnel.Start(std::move(handoff->from_client), std::move(handoff->from_upstream));
  handoff.reset();
  if (!tunnel.done()) (void)co_await done.parked.Wait();  // only OnTunnelDone resumes it
  // The client side's end went out as END_STREAM (ShutdownSend) or the stream is gone.
}

}  // namespace onedomain::dataplane::h2
