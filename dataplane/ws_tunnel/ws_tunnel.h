#pragma once

// The WebSocket tunnel: after the 101, bytes both ways between the client stream and the
// upstream connection, with back-pressure (a direction reads again only once its last bytes
// were written), half-close, TCP keepalive, the route's idle timeout and keepalive pings,
// and a drain that closes both sides cleanly with Close 1001 at a message boundary.
//
// Memory: an idle tunnel holds no read buffer. With a plain client both streams are on the
// worker's edge-triggered EdgePoller, and the pumps are its callbacks (one recv and one send
// per message, no epoll_ctl);
// a readable socket is read into the worker's scratch buffer and written from it at once;
// only bytes the destination cannot take right now are copied to a buffer of their own,
// freed when written. A tunnel with a TLS side runs the coroutine pump instead, which reads
// into the same scratch buffer and holds nothing while it waits; OpenSSL releases its record
// buffers on idle connections (tls_context.h). Per tunnel: two sockets, two frame trackers,
// a deadline.
//
// Config changes never touch a tunnel: it keeps the upstream connection and policy values it
// was opened with. Only drain (SIGTERM), a removed route or the route's idle timeout close it,
// all through the same Close 1001 path.
//
// Thread: one worker. WsTunnelSet is owned by the Worker; tunnels are coroutine frames on the
// worker's dispatcher that register in it for their lifetime.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "dataplane/runtime/time_source.h"
#include "dataplane/stats/dataplane_stats.h"

namespace onedomain::dataplane {

class AnyStream;
class Worker;
struct CompiledSnapshot;
struct WsHandoff;
namespace ws_internal {
struct WsTunnel;
}  // namespace ws_internal

// A worker's open tunnels, its scratch read buffer, and drain.
class WsTunnelSet {
 public:
  static constexpr size_t kScratchSize = 64 * 1024;

  explicit WsTunnelSet(stats::WorkerCounters& counters);
  ~WsTunnelSet();
  WsTunnelSet(const WsTunnelSet&) = delete;
  WsTunnelSet& operator=(const WsTunnelSet&) = delete;

  // SIGTERM: every tunnel closes with Close 1001 at a point spread over its drain_spread;
  // tunnels opened later drain at once.
  void DrainAll();
  bool draining() const { return draining_; }
  // After a config switch: tunnels whose route is gone (or no longer allows WebSockets)
  // drain like on SIGTERM; every other tunnel is left alone.
  void OnConfigSwitch(const CompiledSnapshot& snapshot);

  size_t size() const { return count_; }

  // ---- for tunnels ----
  uint8_t* scratch() { return scratch_.get(); }
  void Add(ws_internal::WsTunnel* t);
  void Remove(ws_internal::WsTunnel* t);
  std::chrono::nanoseconds Jitter(std::chrono::nanoseconds window);
  uint32_t MaskKey() { return static_cast<uint32_t>(rng_()); }
  stats::WorkerCounters& counters() { return counters_; }

 private:
  stats::WorkerCounters& counters_;
  std::unique_ptr<uint8_t[]> scratch_;
  ws_internal::WsTunnel* head_ = nullptr;
  size_t count_ = 0;
  bool draining_ = false;
  std::mt19937_64 rng_;
};

// Runs the tunnel until both sides are closed. `client` stays owned by the session.
boost::asio::awaitable<void> RunWsTunnel(AnyStream& client, Worker& worker,
                                         std::unique_ptr<WsHandoff> handoff);

}  // namespace onedomain::dataplane
