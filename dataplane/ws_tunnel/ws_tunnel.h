#pragma once

// The WebSocket tunnel: after the 101, bytes both ways between the client stream and the
// upstream connection, for ws:// and wss:// alike (the engine is ws_tunnel_engine.h: back-
// pressure, half-close, the route's idle timeout and keepalive pings, and a drain that closes
// both sides cleanly with Close 1001 at a message boundary). This file is its worker-facing
// side: the per-worker set of tunnels (drain, config switches, the scratch read buffer) and
// RunWsTunnel, which the session awaits after the upgrade.
//
// Memory: an idle tunnel holds no read buffer and no coroutine of its own; bytes are read
// into the worker's scratch buffer, and only bytes a destination cannot take now are copied,
// until written. OpenSSL releases its record buffers on idle connections (tls_context.h).
//
// Config changes never touch a tunnel: it keeps the upstream connection and policy values it
// was opened with. Only drain (SIGTERM), a removed route or the route's idle timeout close it,
// all through the same Close 1001 path.
//
// Thread: one worker. WsTunnelSet is owned by the Worker; tunnels register in it for their
// lifetime.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>

#include "dataplane/runtime/dispatcher.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/ws_tunnel/ws_tunnel_engine.h"

namespace onedomain::dataplane {

class AnyStream;
class RouteTable;
struct WsHandoff;

// A worker's open tunnels, its scratch read buffer, and drain.
class WsTunnelSet {
 public:
  static constexpr size_t kScratchSize = 64 * 1024;

  // Tunnels run on `dispatcher` (their timers, their streams' events).
  WsTunnelSet(stats::WorkerCounters& counters, Dispatcher& dispatcher);
  ~WsTunnelSet();
  WsTunnelSet(const WsTunnelSet&) = delete;
  WsTunnelSet& operator=(const WsTunnelSet&) = delete;

  // SIGTERM: every tunnel closes with Close 1001 at a point spread over its drain_spread;
  // tunnels opened later drain at once.
  void DrainAll();
  bool draining() const { return draining_; }
  // After a config switch to `routes`: tunnels whose route is gone (or no longer allows
  // WebSockets) drain like on SIGTERM; every other tunnel is left alone.
  void OnConfigSwitch(const RouteTable& routes);

  size_t size() const { return count_; }

  // ---- for tunnels ----
  uint8_t* scratch() { return scratch_.get(); }
  void Add(WsTunnel* t);
  void Remove(WsTunnel* t);
  std::chrono::nanoseconds Jitter(std::chrono::nanoseconds window);
  uint32_t MaskKey() { return static_cast<uint32_t>(rng_()); }
  stats::WorkerCounters& counters() { return counters_; }
  Dispatcher& dispatcher() { return dispatcher_; }

 private:
  stats::WorkerCounters& counters_;
  Dispatcher& dispatcher_;
  std::unique_ptr<uint8_t[]> scratch_;
  boost::intrusive::list<WsTunnel, boost::intrusive::constant_time_size<false>> tunnels_;
  size_t count_ = 0;
  bool draining_ = false;
  std::mt19937_64 rng_;
};

// Runs the tunnel until both sides are closed. `client` stays owned by the session (which
// shuts it down after); the handoff's upstream connection is closed here.
boost::asio::awaitable<void> RunWsTunnel(AnyStream& client, WsTunnelSet& tunnels,
                                         std::unique_ptr<WsHandoff> handoff);

}  // namespace onedomain::dataplane
