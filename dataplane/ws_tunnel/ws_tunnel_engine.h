#pragma once

// The WebSocket tunnel engine: after the 101, bytes both ways between two non-blocking
// streams (net/any_stream.h's NonBlockingStream: plain TCP or TLS alike, or a unit test's
// in-memory fake), as two pumps, one per direction.
//
// The pumps are event callbacks, not coroutines: a readable source is read into the worker's
// scratch buffer, walked for frame boundaries (headers only) and written to the destination
// at once. Bytes the destination cannot take now are copied to a buffer of the pump's own,
// written as the destination drains, and freed; only then does the pump read again
// (back-pressure). So an idle tunnel holds no buffer, coroutine frame or pending operation:
// per tunnel, its two streams, two frame trackers and a deadline.
//
// Behaviour:
// - half-close: a source's end of stream shuts the destination's send side (TLS: close_notify
//   first); the other direction keeps flowing until its own end;
// - the route's idle timeout (no bytes either way) and keepalive pings to the client (the
//   client's pong is absorbed, never forwarded upstream);
// - drain (SIGTERM, a removed route, the idle timeout): at a point spread over drain_spread,
//   Close 1001 goes both ways, each at the next message boundary of its direction (never
//   inside a frame or a fragmented message); what follows our Close from a side is dropped;
//   once both close handshakes are done, or drain_grace passed, the tunnel ends;
// - max_lifetime: the same drain at a random point of the lifetime's last drain_spread;
// - max_buffered_bytes: a read takes at most this much, so what waits for a slow dst (the
//   pending copy) never exceeds it (plus one injected frame); each such wait is counted;
// - metrics: bytes per direction (route and worker), the first close by initiator and code,
//   the duration, active tunnels and tunnels told to drain.
//
// Thread: one worker. The engine's calls come from the worker's event loop (stream events,
// its deadline's sweep, WsTunnelSet), never from inside one another.

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/dispatcher.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/ws_tunnel/ws_frames.h"

namespace onedomain::dataplane {

class WsTunnelSet;

// The route's values a tunnel keeps for its life, pinned when the 101 passed.
struct WsTunnelPolicy {
  uint32_t route_slot = 0;                         // the route's identity across snapshots
  std::chrono::nanoseconds idle_timeout{0};        // 0: none
  std::chrono::nanoseconds keepalive_interval{0};  // 0: none
  std::chrono::nanoseconds drain_grace{0};
  std::chrono::nanoseconds drain_spread{0};
  std::chrono::nanoseconds max_lifetime{0};  // 0: none; then a drain, jittered
  uint32_t max_buffered_bytes = 0;           // per direction; 0: the scratch size
};

// Told once, when both directions of a tunnel have ended and its metrics are recorded; the
// owner may then destroy the tunnel (not from inside this call).
class WsTunnelDone {
 public:
  virtual void OnTunnelDone() = 0;

 protected:
  ~WsTunnelDone() = default;
};

class WsTunnel : public AutoUnlinkHook {  // the hook: WsTunnelSet's list
 public:
  // The streams, the set, the counters and `done` must outlive the tunnel. Registers in
  // `set` (which may schedule a drain at once) and arms its timer on the set's dispatcher.
  WsTunnel(WsTunnelSet& set, NonBlockingStream& client, NonBlockingStream& upstream,
           stats::RouteCounters& counters, const WsTunnelPolicy& policy, WsTunnelDone& done);
  WsTunnel(const WsTunnel&) = delete;
  WsTunnel& operator=(const WsTunnel&) = delete;
  ~WsTunnel();

  // Takes both streams' events, forwards the bytes handed over with the upgrade (read past
  // the request and past the 101), then pumps. `done` may be told before this returns.
  void Start(std::string from_client, std::string from_upstream);
  bool done() const { return completed_; }

  // Closes with Close 1001 after `delay` (WsTunnelSet's drain and config switches).
  void ScheduleDrain(std::chrono::nanoseconds delay);
  uint32_t route_slot() const { return policy_.route_slot; }
  std::chrono::nanoseconds drain_spread() const { return policy_.drain_spread; }

 private:
  friend class WsTunnelSet;
  enum class Inject : uint8_t { kNone, kPing, kClose };
  enum class Drain : uint8_t { kNone, kScheduled, kDraining };
  enum class Wrote : uint8_t { kAll, kPending, kFailed };

  // Bytes to write: data spans from the scratch buffer and our injected frame between them
  // (at most one per Out, held here).
  struct Out {
    std::array<net::const_buffer, 4> b{};
    size_t n = 0;
    size_t total = 0;
    ws::SmallFrame frame;
    void Add(const void* p, size_t len);
  };

  // One direction. Kept small: an idle tunnel is mostly these two.
  struct Pump {
    bool to_client = false;  // upstream -> client
    Inject inject = Inject::kNone;
    bool absorbing = false;       // our Close went to dst: src's frames are dropped
    bool dropping = false;        // dropping the current frame (a pong answering our ping)
    bool waiting = false;         // waits for src to become readable
    bool writing = false;         // `pending` waits for dst to become writable
    bool src_sent_close = false;  // a Close frame from src passed (forwarded or absorbed)
    bool dst_got_close = false;   // a Close frame reached dst (forwarded or ours)
    bool ended = false;
    uint32_t pongs_to_absorb = 0;
    ws::FrameTracker tracker;
    std::unique_ptr<uint8_t[]> pending;  // bytes dst did not take yet
    uint32_t pending_len = 0;
    uint32_t pending_off = 0;
  };

  // A stream's events: to the pump that reads it and the pump that writes it.
  struct Hook final : StreamEvents {
    explicit Hook(WsTunnel& t) : tunnel(t) {}
    void OnReadable() override {
      tunnel.OnReadable(this == &tunnel.client_hook_ ? tunnel.up_ : tunnel.down_);
    }
    void OnWritable() override {
      tunnel.OnWritable(this == &tunnel.client_hook_ ? tunnel.down_ : tunnel.up_);
    }
    WsTunnel& tunnel;
  };

  void OnTimer();
  void Rearm(Clock::time_point now);
  void StartDrain(Clock::time_point now);
  void RequestInject(Pump& p, Inject kind);
  void Finish();
  void RecordFirstClose(stats::WsCloseInitiator who, int code);
  static stats::WsCloseInitiator SourceSide(const Pump& p);
  static stats::WsCloseInitiator DestinationSide(const Pump& p);
  bool HandshakesDone() const;
  NonBlockingStream& Src(const Pump& p) { return p.to_client ? upstream_ : client_; }
  NonBlockingStream& Dst(const Pump& p) { return p.to_client ? client_ : upstream_; }

  void OnReadable(Pump& p);
  void OnWritable(Pump& p);
  // Runs the pump until it must wait (for input, or for its pending write) or ends.
  void Run(Pump& p);
  void Forward(Pump& p, const uint8_t* data, size_t n, Out& out);
  void ApplyInject(Pump& p, Out& out);
  static bool InjectReady(const Pump& p);
  void OnCloseFromSrc(Pump& p, bool dropped);
  Wrote Write(Pump& p, const Out& out);
  void WriteMore(Pump& p);
  void WriteFailed(Pump& p);
  void HalfClose(Pump& p);
  void End(Pump& p);
  void Complete();

  WsTunnelSet& set_;
  NonBlockingStream& client_;
  NonBlockingStream& upstream_;
  stats::RouteCounters& counters_;
  WsTunnelDone& done_;
  WsTunnelPolicy policy_;
  Pump up_;    // client -> upstream
  Pump down_;  // upstream -> client
  Hook client_hook_{*this};
  Hook upstream_hook_{*this};
  Timer timer_;
  Clock::time_point opened_{};
  Clock::time_point last_activity_{};
  Clock::time_point last_ping_{};
  Clock::time_point drain_at_{};  // kScheduled: when to start; kDraining: when grace ends
  Clock::time_point lifetime_end_ = Clock::time_point::max();  // max_lifetime, jittered
  size_t read_size_ = 0;                                       // per read, <= scratch
  Drain drain_ = Drain::kNone;
  uint8_t running_ = 2;  // pumps not yet ended
  bool finished_ = false;
  bool completed_ = false;
  bool close_recorded_ = false;
  bool counted_draining_ = false;
};

}  // namespace onedomain::dataplane
