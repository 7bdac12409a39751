#include "dataplane/server/snapshot_compiler.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <unordered_map>

#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/cookie/cookie_policy.h"
#include "dataplane/limits/client_limits.h"
#include "dataplane/net/tls_context.h"
#include "dataplane/stats/dataplane_stats.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane {
namespace {

namespace defaults = config::defaults;
using config::DurationOr;
using std::chrono::nanoseconds;

// "listeners[0]" + "tls: cannot load ..." -> "listeners[0].tls: cannot load ...".
absl::Status AtPath(const std::string& path, const absl::Status& s, const char* sep = ": ") {
  return absl::Status(s.code(), str::Cat(path, sep, s.message()));
}

ListenerLimits CompileLimits(const v1::Listener& l) {
  ListenerLimits lim;
  const v1::HttpLimits& h = l.limits();
  lim.max_header_bytes =
      h.has_max_header_bytes() ? h.max_header_bytes() : defaults::kMaxHeaderBytes;
  lim.header_timeout =
      DurationOr(h.has_header_timeout(), h.header_timeout(), defaults::kHeaderTimeout);
  lim.idle_timeout = DurationOr(h.has_idle_timeout(), h.idle_timeout(), defaults::kIdleTimeout);
  lim.max_body_bytes = h.has_max_body_bytes() ? h.max_body_bytes() : defaults::kMaxBodyBytes;
  lim.max_connections_per_worker = h.max_connections_per_worker();
  lim.request_buffer_bytes =
      h.has_request_buffer_bytes() ? h.request_buffer_bytes() : defaults::kRequestBufferBytes;
  lim.body_timeout = DurationOr(h.has_body_timeout(), h.body_timeout(), defaults::kBodyTimeout);
  return lim;
}

absl::StatusOr<std::shared_ptr<CompiledListener>> CompileListener(const v1::Listener& l) {
  auto out = std::make_shared<CompiledListener>();
  out->name = l.name();
  out->address = l.address().empty() ? "0.0.0.0" : l.address();
  out->limits = CompileLimits(l);
  out->forwarded_proto = !l.forwarded_proto().empty() ? l.forwarded_proto()
                         : l.has_tls()                ? "https"
                                                      : "http";
  if (!ParseProxyProtocolMode(l.proxy_protocol(), out->proxy_protocol)) {
    return absl::InvalidArgumentError(
        str::Cat("proxy_protocol: must be v1, v2, any or off, got '", l.proxy_protocol(), "'"));
  }
  if (l.has_proxy_header_timeout()) {
    out->proxy_header_timeout = config::ToChrono(l.proxy_header_timeout());
  }
  out->source = l;
  if (l.has_tls()) {
    auto ctx = TlsServerContext::Load(l.tls());
    if (!ctx.ok()) return AtPath("tls", ctx.status());
    out->tls = *std::move(ctx);
  }
  return out;
}

bool IsIpLiteral(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  return !ec;
}

std::shared_ptr<CompiledCluster> CompileCluster(const v1::Cluster& c, bool resolve_dns) {
  auto out = std::make_shared<CompiledCluster>();
  out->name = c.name();
  out->lb = c.lb_policy() == v1::LB_POLICY_LEAST_REQUEST ? LbPolicy::kLeastRequest
                                                         : LbPolicy::kRoundRobin;
  out->connect_timeout =
      DurationOr(c.has_connect_timeout(), c.connect_timeout(), defaults::kConnectTimeout);
  out->response_timeout =
      DurationOr(c.has_response_timeout(), c.response_timeout(), defaults::kResponseTimeout);
  out->pool.max_idle = c.pool().has_max_idle() ? c.pool().max_idle() : defaults::kPoolMaxIdle;
  out->pool.max_connections = c.pool().max_connections();
  out->pool.idle_timeout =
      DurationOr(c.pool().has_idle_timeout(), c.pool().idle_timeout(), defaults::kPoolIdleTimeout);
  const v1::OutlierDetection& od = c.outlier_detection();
  out->outlier.consecutive_failures = od.has_consecutive_failures()
                                          ? od.consecutive_failures()
                                          : defaults::kOutlierConsecutiveFailures;
  out->outlier.ejection_time =
      DurationOr(od.has_ejection_time(), od.ejection_time(), defaults::kOutlierEjectionTime);
  out->outlier.count_5xx = od.count_5xx();
  out->outlier.panic_threshold_percent = od.has_panic_threshold_percent()
                                             ? od.panic_threshold_percent()
                                             : defaults::kOutlierPanicThresholdPercent;
  out->dns_refresh_interval = DurationOr(c.has_dns_refresh_interval(), c.dns_refresh_interval(),
                                         defaults::kDnsRefreshInterval);
  for (const v1::Endpoint& e : c.endpoints()) {
    CompiledEndpoint ep;
    ep.host = e.host();
    ep.port = static_cast<uint16_t>(e.port());
    ep.literal = IsIpLiteral(e.host());
    const bool v6 = ep.literal && e.host().find(':') != std::string::npos;
    ep.authority = v6 ? str::Cat("[", e.host(), "]:", e.port()) : str::Cat(e.host(), ":", e.port());
    if (ep.literal) {
      ep.addresses.emplace_back(boost::asio::ip::make_address(e.host()), ep.port);
    } else if (resolve_dns) {
      ep.addresses = ResolveNow(ep.host, ep.port);
    }
    out->endpoints.push_back(std::move(ep));
  }
  out->source = c;
  return out;
}

}  // namespace

std::vector<boost::asio::ip::tcp::endpoint> ResolveNow(const std::string& host, uint16_t port) {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::resolver resolver(ioc);
  boost::system::error_code ec;
  const auto results = resolver.resolve(host, std::to_string(port), ec);
  std::vector<boost::asio::ip::tcp::endpoint> out;
  if (ec) {
    log::Warn("dns", str::Cat("cannot resolve '", host, "': ", ec.message(),
                              " (no traffic to it until it resolves)"));
    return out;
  }
  for (const auto& r : results) {
    if (std::find(out.begin(), out.end(), r.endpoint()) == out.end()) out.push_back(r.endpoint());
  }
  return out;
}

absl::StatusOr<std::shared_ptr<CompiledListener>> ReloadListenerTls(const CompiledListener& l) {
  auto ctx = TlsServerContext::Load(l.source.tls());
  if (!ctx.ok()) return ctx.status();
  auto out = std::make_shared<CompiledListener>(l);
  out->tls = *std::move(ctx);
  return out;
}

absl::StatusOr<std::shared_ptr<CompiledSnapshot>> CompileSnapshot(
    std::shared_ptr<const v1::Snapshot> snapshot, const CompiledSnapshot* previous,
    const CompileOptions& options) {
  const v1::Snapshot& s = *snapshot;
  auto out = std::make_shared<CompiledSnapshot>();
  out->version = s.version();

  for (int i = 0; i < s.listeners_size(); ++i) {
    auto l = CompileListener(s.listeners(i));
    if (!l.ok()) return AtPath(str::Cat("listeners[", i, "]"), l.status(), ".");
    if (options.listener_slot) (*l)->slot = options.listener_slot(s.listeners(i).name());
    out->listeners.push_back(*std::move(l));
  }

  std::unordered_map<std::string, uint32_t> cluster_index;
  for (int i = 0; i < s.clusters_size(); ++i) {
    const v1::Cluster& c = s.clusters(i);
    if (c.has_tls()) {
      return absl::UnimplementedError(str::Cat(
          "clusters[", i, "].tls: TLS to upstreams is not implemented yet (plain TCP only)"));
    }
    std::shared_ptr<const CompiledCluster> compiled;
    if (previous != nullptr) {
      for (const auto& p : previous->clusters) {
        if (google::protobuf::util::MessageDifferencer::Equals(p->source, c)) {
          compiled = p;  // unchanged: keep pools, outlier state and fresher DNS answers
          break;
        }
      }
    }
    if (!compiled) {
      auto fresh = CompileCluster(c, options.resolve_dns);
      if (options.catalog != nullptr) fresh->stats_slot = options.catalog->ClusterSlot(c.name());
      compiled = std::move(fresh);
    }
    cluster_index.emplace(c.name(), static_cast<uint32_t>(out->clusters.size()));
    out->clusters.push_back(std::move(compiled));
  }

  std::shared_ptr<const CompiledCookiePolicy> global_cookies;
  if (s.has_cookie_policy()) {
    auto p = std::make_shared<CompiledCookiePolicy>(s.cookie_policy());
    if (!p->IsNoop()) global_cookies = std::move(p);
  }
  std::vector<CompiledRoute> routes;
  std::vector<RouteClientLimits> route_limits;
  for (int i = 0; i < s.routes_size(); ++i) {
    const v1::Route& r = s.routes(i);
    CompiledRoute cr;
    cr.name = r.name();
    cr.index = static_cast<uint32_t>(i);
    cr.exact = !r.match().exact().empty();
    cr.path = cr.exact ? r.match().exact() : r.match().prefix();
    std::string_view host = r.match().host();
    cr.host_wildcard = str::ConsumePrefix(host, "*.");
    cr.host = str::ToLower(host);
    if (!cr.host.empty() && cr.host.back() == '.') cr.host.pop_back();
    const auto it = cluster_index.find(r.cluster());
    if (it == cluster_index.end()) {
      // ValidateSnapshot rejects this first; keep the compiler safe on its own.
      return absl::InvalidArgumentError(
          str::Cat("routes[", i, "].cluster: unknown cluster '", r.cluster(), "'"));
    }
    cr.cluster_index = it->second;
    cr.cluster_name = r.cluster();
    cr.websocket = r.websocket();
    if (r.has_max_body_bytes()) cr.max_body_bytes = r.max_body_bytes();
    if (r.has_request_timeout()) cr.request_timeout = config::ToChrono(r.request_timeout());
    cr.host_rewrite = r.host_rewrite();
    cr.prefix_rewrite = r.prefix_rewrite();
    if (r.has_cookie_policy()) {
      auto p = std::make_shared<CompiledCookiePolicy>(r.cookie_policy());
      if (!p->IsNoop()) cr.cookie_policy = std::move(p);
    } else {
      cr.cookie_policy = global_cookies;
    }
    auto ws = std::make_shared<v1::WebSocketPolicy>(s.websocket_policy());
    if (r.has_websocket_policy()) {
      // A route's Origin list replaces the global one (MergeFrom would append).
      if (r.websocket_policy().allowed_origins_size() > 0) ws->clear_allowed_origins();
      ws->MergeFrom(r.websocket_policy());
    }
    if (options.catalog != nullptr) cr.stats_slot = options.catalog->RouteSlot(r.name());
    // Client limits: a route's own values keep their state under a scope stable by name.
    const uint32_t scope =
        (options.catalog != nullptr ? cr.stats_slot : static_cast<uint32_t>(i)) + 1;
    route_limits.push_back(CompileRouteClientLimits(s, r, ws.get(), scope));
    cr.websocket_policy = std::move(ws);
    routes.push_back(std::move(cr));
  }
  out->routes = std::make_shared<RouteTable>(std::move(routes));
  auto node_limits = CompileNodeClientLimits(s);
  if (!node_limits.ok()) return node_limits.status();
  out->client_limits = *std::move(node_limits);
  const bool any_route_limit =
      std::any_of(route_limits.begin(), route_limits.end(), [](const RouteClientLimits& l) {
        return l.max_websockets_per_client != 0 || l.max_websockets_per_cookie != 0 ||
               l.upgrade_rate.enabled() || l.request_rate.enabled();
      });
  if (any_route_limit) out->route_limits = std::move(route_limits);
  out->source = std::move(snapshot);
  return out;
}

}  // namespace onedomain::dataplane
