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
#include "dataplane/runtime/compiled_snapshot.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/runtime/worker.h"
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
  explicit ResumeWhenDone(EdgePoller& poller) : parked(poller) {}
  void OnTunnelDone() override { parked.Post({}); }
  Parked parked;
};

}  // namespace

WsTunnelSet::WsTunnelSet(stats::WorkerCounters& counters)
    : counters_(counters), scratch_(new uint8_t[kScratchSize]), rng_(std::random_device{}()) {}

WsTunnelSet::~WsTunnelSet() = default;

void WsTunnelSet::Add(WsTunnel* t) {
  t->prev_ = nullptr;
  t->next_ = head_;
  if (head_ != nullptr) head_->prev_ = t;
  head_ = t;
  t->listed_ = true;
  ++count_;
  if (draining_) t->ScheduleDrain(std::chrono::nanoseconds(0));
}

void WsTunnelSet::Remove(WsTunnel* t) {
  if (!t->listed_) return;
  if (t->prev_ != nullptr) {
    t->prev_->next_ = t->next_;
  } else {
    head_ = t->next_;
  }
  if (t->next_ != nullptr) t->next_->prev_ = t->prev_;
  t->prev_ = t->next_ = nullptr;
  t->listed_ = false;
  --count_;
}

std::chrono::nanoseconds WsTunnelSet::Jitter(std::chrono::nanoseconds window) {
  if (window.count() <= 0) return window.zero();
  std::uniform_int_distribution<int64_t> d(0, window.count());
  return std::chrono::nanoseconds(d(rng_));
}

void WsTunnelSet::DrainAll() {
  draining_ = true;
  for (WsTunnel* t = head_; t != nullptr; t = t->next_) {
    t->ScheduleDrain(Jitter(t->drain_spread()));
  }
}

void WsTunnelSet::OnConfigSwitch(const CompiledSnapshot& snapshot) {
  if (head_ == nullptr) return;
  std::vector<uint32_t> live;
  for (const CompiledRoute& r : snapshot.routes->routes()) {
    if (r.websocket) live.push_back(r.stats_slot);
  }
  for (WsTunnel* t = head_; t != nullptr; t = t->next_) {
    if (std::find(live.begin(), live.end(), t->route_slot()) == live.end()) {
      t->ScheduleDrain(Jitter(t->drain_spread()));
    }
  }
}

// The values the tunnel keeps from the handoff.
WsTunnelPolicy PolicyOf(const WsHandoff& h) {
  return WsTunnelPolicy{h.route_slot, h.idle_timeout, h.keepalive_interval, h.drain_grace,
                        h.drain_spread};
}

// Its frame is what an idle tunnel costs (with the two streams and OpenSSL's session): keep
// locals few.
net::awaitable<void> RunWsTunnel(AnyStream& client, Worker& worker,
                                 std::unique_ptr<WsHandoff> handoff) {
  const std::unique_ptr<UpstreamConnection> upstream = std::move(handoff->upstream);
  EnableKeepalive(client.native_handle());
  EnableKeepalive(upstream->stream().native_handle());
  ResumeWhenDone done(worker.poller());
  WsTunnel tunnel(worker.ws_tunnels(), worker.deadlines(), client, upstream->stream(),
                  *handoff->counters, PolicyOf(*handoff), done);
  tunnel.Start(std::move(handoff->from_client), std::move(handoff->from_upstream));
  handoff.reset();
  if (!tunnel.done()) (void)co_await done.parked.Wait();  // only OnTunnelDone resumes it
}

}  // namespace onedomain::dataplane
