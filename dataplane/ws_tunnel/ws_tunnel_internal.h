#pragma once

// Internals of the WebSocket tunnel, shared by its two translation units: ws_tunnel.cc (the
// tunnel's state, drain, injection, the frame walk and the coroutine pumps used with a TLS
// client) and ws_plain_pump.cc (the callback pumps of a plain client, driven by the worker's
// EdgePoller). Included by those two files only.
//
// Thread: one worker.

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/worker/worker.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/upstream/upstream_connection.h"
#include "dataplane/ws_tunnel/ws_frames.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "dataplane/ws_tunnel/ws_handoff.h"

namespace onedomain::dataplane {

namespace ws_internal {

enum class Inject : uint8_t { kNone, kPing, kClose };

// Bytes to write: up to three spans (data, injected frame, data).
struct Out {
  std::array<net::const_buffer, 4> b{};
  size_t n = 0;
  size_t total = 0;
  void Add(const void* p, size_t len) {
    if (len == 0) return;
    if (n > 0 && static_cast<const uint8_t*>(b[n - 1].data()) + b[n - 1].size() == p) {
      b[n - 1] = net::const_buffer(b[n - 1].data(), b[n - 1].size() + len);
    } else {
      b[n++] = net::const_buffer(p, len);
    }
    total += len;
  }
};

// What a plain pump does once its asynchronous write of leftover bytes has finished.
enum class AfterWrite : uint8_t { kCarry, kInject, kData };

// One direction of a tunnel.
struct WsPump {
  AnyStream* src = nullptr;
  AnyStream* dst = nullptr;
  bool to_client = false;  // upstream -> client
  bool dst_tls = false;
  ws::FrameTracker tracker;
  std::string carry;                         // handed-over bytes, forwarded first
  ws::SmallFrame inject_frame;
  Inject inject = Inject::kNone;
  bool absorbing = false;   // after our Close went to dst: src's frames are dropped
  bool dropping = false;    // dropping the current frame (a pong answering our ping)
  uint32_t pongs_to_absorb = 0;
  bool waiting = false;     // suspended reading src
  bool writing = false;     // suspended writing dst
  bool src_sent_close = false;  // a Close frame from src passed (forwarded or absorbed)
  bool dst_got_close = false;   // a Close frame reached dst (forwarded or ours)
  bool ended = false;
  // The last read filled the scratch buffer, so more may be queued: read before waiting.
  // Otherwise wait first; a read that would find nothing costs a syscall per message.
  bool maybe_readable = true;
  stats::Counter* bytes = nullptr;
  stats::Counter* worker_bytes = nullptr;
  // Plain pumps (callback-driven, on raw descriptors watched by the worker's poller).
  int src_fd = -1;
  int dst_fd = -1;
  bool write_parked = false;  // `pending` waits for dst to become writable
  // The poller saw src's end (RDHUP/HUP/ERR): read on to it even after a short read, as no
  // further edge will announce it.
  bool src_hup = false;
  // Bytes dst could not take yet, being written.
  std::unique_ptr<uint8_t[]> pending;
  uint32_t pending_len = 0;
  uint32_t pending_off = 0;
  AfterWrite after_write = AfterWrite::kData;
};

// A descriptor of a plain tunnel, whose poller events the stream delegates to the tunnel:
// which pump reads it and which writes it.
struct FdWatch {
  WsTunnel* tunnel = nullptr;
  WsPump* reader = nullptr;
  WsPump* writer = nullptr;
};

struct WsTunnel {
  WsTunnel(Worker& w, AnyStream& c, std::unique_ptr<WsHandoff> h)
      : worker(w),
        set(w.ws_tunnels()),
        client(c),
        handoff(std::move(h)),
        timer(w.dispatcher(), [this] { OnTimer(); }),
        done(w.dispatcher()) {}

  void OnTimer();
  void Rearm(Clock::time_point now);
  void ScheduleDrain(std::chrono::nanoseconds delay);
  void StartDrain(Clock::time_point now);
  void RequestInject(WsPump& p, Inject kind);
  void Finish();
  void RecordFirstClose(stats::WsCloseInitiator who, int code) {
    if (close_recorded) return;
    close_recorded = true;
    counters->ws.RecordClose(who, code);
  }
  bool HandshakesDone() const {
    return up.src_sent_close && up.dst_got_close && down.src_sent_close && down.dst_got_close;
  }

  Worker& worker;
  WsTunnelSet& set;
  AnyStream& client;
  std::unique_ptr<WsHandoff> handoff;
  std::unique_ptr<UpstreamConnection> upstream;
  stats::RouteCounters* counters = nullptr;
  uint32_t route_slot = 0;
  std::chrono::nanoseconds idle{0};
  std::chrono::nanoseconds keepalive{0};
  std::chrono::nanoseconds grace{0};
  std::chrono::nanoseconds spread{0};
  WsPump up;    // client -> upstream
  WsPump down;  // upstream -> client
  Timer timer;
  Clock::time_point opened{};
  Clock::time_point last_activity{};
  Clock::time_point last_ping{};
  Clock::time_point drain_at{};
  Clock::time_point grace_end{};
  enum class Drain : uint8_t { kNone, kScheduled, kDraining } drain = Drain::kNone;
  bool finished = false;
  bool close_recorded = false;
  bool counted_draining = false;
  uint8_t plain_running = 0;  // plain pumps not yet ended
  bool plain = false;         // pumps on raw descriptors (a plain client)
  FdWatch client_watch;
  FdWatch upstream_watch;
  Parked done;  // RunWsTunnel, until both plain pumps have ended
  WsTunnel* prev = nullptr;
  WsTunnel* next = nullptr;
};

// ---- shared by both kinds of pump (ws_tunnel.cc) ----
bool InjectReady(const WsPump& p);
// Adds p's pending injected frame to `out`.
void ApplyInject(WsTunnel& t, WsPump& p, Out& out);
// Walks a chunk read from src: forwards it (into `out`, pointing into `data`), drops what
// must not reach dst, injects our frame at the first boundary that allows it.
void Process(WsTunnel& t, WsPump& p, const uint8_t* data, size_t n, Out& out);
void CountBytes(WsPump& p, size_t n);
// After src's end of stream: half-close dst (plain) or end the tunnel (TLS client, drain).
void HalfClose(WsTunnel& t, WsPump& p);

// ---- the plain pumps (ws_plain_pump.cc) ----
// The poller's events for one of a plain tunnel's descriptors; `ctx` is its FdWatch.
void OnFdEvents(void* ctx, uint32_t events);
// Forwards the handed-over bytes, then runs the pump.
void PlainStart(WsTunnel& t, WsPump& p);
// Runs the pump until it must wait (for readability, or for a write pending) or ends.
void PlainLoop(WsTunnel& t, WsPump& p);
// Ends the pump; the last of the two resumes RunWsTunnel.
void PlainEnd(WsTunnel& t, WsPump& p);

}  // namespace ws_internal
}  // namespace onedomain::dataplane
