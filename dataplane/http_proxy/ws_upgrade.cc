#include "dataplane/http_proxy/ws_upgrade.h"

#include <string>

#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "dataplane/routing/route_table.h"
#include "onedomain/v1/websocket_policy.pb.h"

namespace onedomain::dataplane {
namespace {

std::chrono::nanoseconds PolicyDuration(bool has, const google::protobuf::Duration& d,
                                        std::chrono::nanoseconds fallback) {
  return has ? config::ToChrono(d) : fallback;
}

void TakeAll(boost::beast::flat_buffer& from, std::string& to) {
  to.assign(static_cast<const char*>(from.data().data()), from.size());
  from.consume(from.size());
}

}  // namespace

std::unique_ptr<WsHandoff> MakeWsHandoff(const CompiledRoute& route, stats::RouteCounters* counters,
                                         std::unique_ptr<UpstreamConnection> upstream,
                                         boost::beast::flat_buffer& from_client,
                                         boost::beast::flat_buffer& from_upstream) {
  auto h = std::make_unique<WsHandoff>();
  h->upstream = std::move(upstream);
  TakeAll(from_client, h->from_client);
  TakeAll(from_upstream, h->from_upstream);
  h->counters = counters;
  h->route_slot = route.stats_slot;
  const v1::WebSocketPolicy* p = route.websocket_policy.get();
  if (p != nullptr) {
    h->idle_timeout = PolicyDuration(p->has_idle_timeout(), p->idle_timeout(), {});
    h->keepalive_interval =
        PolicyDuration(p->has_keepalive_interval(), p->keepalive_interval(), {});
    h->drain_grace =
        PolicyDuration(p->has_drain_grace(), p->drain_grace(), config::defaults::kWsDrainGrace);
    h->drain_spread =
        PolicyDuration(p->has_drain_spread(), p->drain_spread(), config::defaults::kWsDrainSpread);
    h->max_lifetime = PolicyDuration(p->has_max_lifetime(), p->max_lifetime(), {});
    h->max_buffered_bytes = p->has_max_buffered_bytes() ? p->max_buffered_bytes() : 0;
  } else {
    h->drain_grace = config::defaults::kWsDrainGrace;
    h->drain_spread = config::defaults::kWsDrainSpread;
  }
  return h;
}

}  // namespace onedomain::dataplane
