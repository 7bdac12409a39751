#include "dataplane/ws_tunnel/ws_tunnel.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/net/any_stream.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/ws_tunnel/ws_handoff.h"
#include "dataplane/ws_tunnel/ws_tunnel_engine.h"

namespace onedomain::dataplane {
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

// Resumes RunWsTunnel once the engine is done (posted: never under the engine's feet).
struct ResumeWhenDone final : WsTunnelDone {
  explicit ResumeWhenDone(Dispatcher& dispatcher) : parked(dispatcher) {}
  void OnTunnelDone() override { parked.Post({}); }
  Parked parked;
};

}  // namespace

WsTunnelSet::WsTunnelSet(stats::WorkerCounters& counters, Dispatcher& dispatcher)
    : counters_(counters),
      dispatcher_(dispatcher),
      scratch_(new uint8_t[kScratchSize]),
      rng_(std::random_device{}()) {}

WsTunnelSet::~WsTunnelSet() = default;

void WsTunnelSet::Add(WsTunnel* t) {
  tunnels_.push_front(*t);
  ++count_;
  if (draining_) t->ScheduleDrain(std::chrono::nanoseconds(0));
}

void WsTunnelSet::Remove(WsTunnel* t) {
  if (!t->is_linked()) return;
  t->unlink();
  --count_;
}

std::chrono::nanoseconds WsTunnelSet::Jitter(std::chrono::nanoseconds window) {
  if (window.count() <= 0) return window.zero();
  std::uniform_int_distribution<int64_t> d(0, window.count());
  return std::chrono::nanoseconds(d(rng_));
}

void WsTunnelSet::DrainAll() {
  draining_ = true;
  for (WsTunnel& t : tunnels_) t.ScheduleDrain(Jitter(t.drain_spread()));
}

void WsTunnelSet::OnConfigSwitch(const RouteTable& routes) {
  if (tunnels_.empty()) return;
  std::vector<uint32_t> live;
  for (const CompiledRoute& r : routes.routes()) {
    if (r.websocket) live.push_back(r.stats_slot);
  }
  for (WsTunnel& t : tunnels_) {
    if (std::find(live.begin(), live.end(), t.route_slot()) == live.end()) {
      t.ScheduleDrain(Jitter(t.drain_spread()));
    }
  }
}

// The values the tunnel keeps from the handoff.
WsTunnelPolicy PolicyOf(const WsHandoff& h) {
  return WsTunnelPolicy{h.route_slot,   h.idle_timeout, h.keepalive_interval, h.drain_grace,
                        h.drain_spread, h.max_lifetime, h.max_buffered_bytes};
}

// Its frame is what an idle tunnel costs (with the two streams and OpenSSL's session): keep
// locals few.
net::awaitable<void> RunWsTunnel(AnyStream& client, WsTunnelSet& tunnels,
                                 std::unique_ptr<WsHandoff> handoff) {
  const std::unique_ptr<UpstreamConnection> upstream = std::move(handoff->upstream);
  EnableKeepalive(client.native_handle());
  EnableKeepalive(upstream->stream().native_handle());
  ResumeWhenDone done(tunnels.dispatcher());
  WsTunnel tunnel(tunnels, client, upstream->stream(), *handoff->counters, PolicyOf(*handoff),
                  done);
  tunnel.Start(std::move(handoff->from_client), std::move(handoff->from_upstream));
  handoff.reset();
  if (!tunnel.done()) (void)co_await done.parked.Wait();  // only OnTunnelDone resumes it
}

}  // namespace onedomain::dataplane
