#include "dataplane/stats/dataplane_stats.h"

#include <prometheus/metric_family.h>

#include <limits>

#include "common/strings/strings.h"
#include "dataplane/cookie/cookie_policy.h"

namespace onedomain::dataplane::stats {
namespace {

prometheus::ClientMetric Labelled(std::initializer_list<std::pair<const char*, std::string>> l) {
  prometheus::ClientMetric m;
  for (const auto& [name, value] : l) m.label.push_back({name, value});
  return m;
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

}  // namespace

std::string_view UpgradeResultName(UpgradeResult r) {
  switch (r) {
    case UpgradeResult::kAccepted:
      return "accepted";
    case UpgradeResult::kOriginRefused:
      return "origin_refused";
    case UpgradeResult::kCookieRefused:
      return "cookie_refused";
    case UpgradeResult::kNotAllowed:
      return "not_allowed";
    case UpgradeResult::kMalformed:
      return "malformed";
    case UpgradeResult::kUpstreamRefused:
      return "upstream_refused";
    case UpgradeResult::kUpstreamFailed:
      return "upstream_failed";
    case UpgradeResult::kCount:
      break;
  }
  return "unknown";
}

std::string_view Http2GoawayName(Http2Goaway r) {
  switch (r) {
    case Http2Goaway::kNoError:
      return "no_error";
    case Http2Goaway::kProtocolError:
      return "protocol_error";
    case Http2Goaway::kFlowControlError:
      return "flow_control_error";
    case Http2Goaway::kCompressionError:
      return "compression_error";
    case Http2Goaway::kEnhanceYourCalm:
      return "enhance_your_calm";
    case Http2Goaway::kOther:
    case Http2Goaway::kCount:
      break;
  }
  return "other";
}

std::string_view Http2ErrorName(Http2Error r) {
  switch (r) {
    case Http2Error::kBadPreface:
      return "bad_preface";
    case Http2Error::kFlood:
      return "flood";
    case Http2Error::kRapidReset:
      return "rapid_reset";
    case Http2Error::kEmptyFrames:
      return "empty_frames";
    case Http2Error::kHeaderListTooLarge:
      return "header_list_too_large";
    case Http2Error::kBadHeader:
      return "bad_header";
    case Http2Error::kBadMessage:
      return "bad_message";
    case Http2Error::kFlowControl:
      return "flow_control";
    case Http2Error::kProtocol:
      return "protocol";
    case Http2Error::kZeroWindow:
      return "zero_window";
    case Http2Error::kCount:
      break;
  }
  return "protocol";
}

void RouteCounters::RecordRequest(int status, double seconds, bool http2) {
  if (status >= 0 && static_cast<size_t>(status) < kStatusCodes) {
    codes[status].Add();
    if (http2) codes_http2[status].Add();
  }
  size_t b = 0;
  while (b < kDurationBounds.size() && seconds > kDurationBounds[b]) ++b;
  duration_buckets[b].Add();
  duration_sum.store(duration_sum.load(std::memory_order_relaxed) + seconds,
                     std::memory_order_relaxed);
}

StatsCatalog::StatsCatalog(size_t workers) : workers_(workers) { RouteSlot("none"); }

uint32_t StatsCatalog::RouteSlot(const std::string& name) {
  std::lock_guard lock(mu_);
  if (auto it = route_slots_.find(name); it != route_slots_.end()) return it->second;
  const auto slot = static_cast<uint32_t>(route_names_.size());
  route_names_.push_back(name);
  route_slots_.emplace(name, slot);
  for (PerWorker& w : workers_) w.routes.push_back(std::make_unique<RouteCounters>());
  return slot;
}

uint32_t StatsCatalog::ClusterSlot(const std::string& name) {
  std::lock_guard lock(mu_);
  if (auto it = cluster_slots_.find(name); it != cluster_slots_.end()) return it->second;
  const auto slot = static_cast<uint32_t>(cluster_names_.size());
  cluster_names_.push_back(name);
  cluster_slots_.emplace(name, slot);
  for (PerWorker& w : workers_) w.clusters.push_back(std::make_unique<ClusterCounters>());
  return slot;
}

RouteCounters& StatsCatalog::route(size_t worker, uint32_t slot) {
  std::lock_guard lock(mu_);
  return *workers_[worker].routes[slot];
}

ClusterCounters& StatsCatalog::cluster(size_t worker, uint32_t slot) {
  std::lock_guard lock(mu_);
  return *workers_[worker].clusters[slot];
}

void WsTunnelCounters::RecordClose(WsCloseInitiator who, int code) {
  size_t slot = kWsCloseCodeSlots - 1;  // "none"
  if (code >= 1000 && code <= 1015) {
    slot = static_cast<size_t>(code - 1000);
  } else if (code != 0) {
    slot = kWsCloseCodeSlots - 2;  // "other"
  }
  closes[static_cast<size_t>(who) * kWsCloseCodeSlots + slot].Add();
}

void WsTunnelCounters::RecordDuration(double seconds) {
  size_t i = 0;
  while (i < kWsDurationBounds.size() && seconds > kWsDurationBounds[i]) ++i;
  duration_buckets[i].Add();
  duration_sum.store(duration_sum.load(std::memory_order_relaxed) + seconds,
                     std::memory_order_relaxed);
}

// Called with mu_ held (from Collect).
void StatsCatalog::CollectWebSocketFamilies(std::vector<prometheus::MetricFamily>& out) const {
  using prometheus::MetricType;
  auto make = [](std::string name, std::string help, MetricType type) {
    prometheus::MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
  };
  auto labelled = [](std::initializer_list<std::pair<std::string, std::string>> labels) {
    prometheus::ClientMetric m;
    for (const auto& [k, v] : labels) m.label.push_back({k, v});
    return m;
  };
  auto drain = make("onedomain_websocket_drain_remaining",
                    "WebSocket tunnels told to close (drain, removed route) and not closed yet.",
                    MetricType::Gauge);
  int64_t remaining = 0;
  for (const PerWorker& w : workers_) remaining += w.totals->websocket_drain_remaining.Get();
  prometheus::ClientMetric dm;
  dm.gauge.value = static_cast<double>(remaining);
  drain.metric.push_back(dm);

  auto closes = make("onedomain_websocket_closes_total",
                     "WebSocket tunnels closed, by route, initiator (client, upstream, proxy) "
                     "and close code (1000..1015, other, none: no Close frame).",
                     MetricType::Counter);
  auto duration = make("onedomain_websocket_connection_duration_seconds",
                       "How long WebSocket tunnels stayed open, by route.", MetricType::Histogram);
  static constexpr const char* kInitiators[] = {"client", "upstream", "proxy"};
  for (uint32_t slot = 0; slot < route_names_.size(); ++slot) {
    if (slot == kNoRouteSlot) continue;
    const std::string& route = route_names_[slot];
    std::array<uint64_t, kWsCloseCodeSlots * 3> sums{};
    std::array<uint64_t, kWsDurationBounds.size() + 1> buckets{};
    double sum = 0;
    for (const PerWorker& w : workers_) {
      const WsTunnelCounters& c = w.routes[slot]->ws;
      for (size_t i = 0; i < sums.size(); ++i) sums[i] += c.closes[i].Get();
      for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += c.duration_buckets[i].Get();
      sum += c.duration_sum.load(std::memory_order_relaxed);
    }
    for (size_t i = 0; i < sums.size(); ++i) {
      if (sums[i] == 0) continue;
      const size_t code = i % kWsCloseCodeSlots;
      const std::string code_label = code < 16                       ? str::Cat(1000 + code)
                                     : code == kWsCloseCodeSlots - 2 ? std::string("other")
                                                                     : std::string("none");
      auto m = labelled({{"route", route},
                         {"initiator", kInitiators[i / kWsCloseCodeSlots]},
                         {"code", code_label}});
      m.counter.value = static_cast<double>(sums[i]);
      closes.metric.push_back(std::move(m));
    }
    uint64_t count = 0;
    for (uint64_t b : buckets) count += b;
    if (count == 0) continue;
    auto m = labelled({{"route", route}});
    m.histogram.sample_count = count;
    m.histogram.sample_sum = sum;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < buckets.size(); ++i) {
      cumulative += buckets[i];
      m.histogram.bucket.push_back({cumulative, i < kWsDurationBounds.size()
                                                    ? kWsDurationBounds[i]
                                                    : std::numeric_limits<double>::infinity()});
    }
    duration.metric.push_back(std::move(m));
  }
  out.push_back(std::move(drain));
  out.push_back(std::move(closes));
  out.push_back(std::move(duration));
}

std::vector<prometheus::MetricFamily> StatsCatalog::Collect() const {
  using prometheus::MetricType;
  std::lock_guard lock(mu_);
  std::vector<prometheus::MetricFamily> out;

  auto conns_active = Family("onedomain_downstream_connections_active",
                             "Client connections open now.", MetricType::Gauge);
  auto conns_total = Family("onedomain_downstream_connections_total",
                            "Client connections accepted.", MetricType::Counter);
  auto bytes = Family("onedomain_downstream_bytes_total",
                      "Bytes received from and sent to clients.", MetricType::Counter);
  auto accept_failures = Family(
      "onedomain_downstream_accept_failures_total",
      "Client connections the node could not take, by reason: accept_error (accept() failed: "
      "out of memory or descriptors) and shed (out of descriptors: accepted with the reserve "
      "descriptor and closed at once, so the client is not left waiting).",
      MetricType::Counter);
  {
    int64_t active = 0;
    uint64_t total = 0, rx = 0, tx = 0, failed = 0, shed = 0;
    for (const PerWorker& w : workers_) {
      active += w.totals->downstream_active.Get();
      total += w.totals->downstream_total.Get();
      failed += w.totals->accept_failures.Get();
      shed += w.totals->accept_shed.Get();
      rx += w.totals->bytes_received.Get();
      tx += w.totals->bytes_sent.Get();
    }
    prometheus::ClientMetric m;
    m.gauge.value = static_cast<double>(active);
    conns_active.metric.push_back(m);
    m = {};
    m.counter.value = static_cast<double>(total);
    conns_total.metric.push_back(m);
    m = Labelled({{"direction", "received"}});
    m.counter.value = static_cast<double>(rx);
    bytes.metric.push_back(m);
    m = Labelled({{"direction", "sent"}});
    m.counter.value = static_cast<double>(tx);
    bytes.metric.push_back(m);
    m = Labelled({{"reason", "accept_error"}});
    m.counter.value = static_cast<double>(failed);
    accept_failures.metric.push_back(m);
    m = Labelled({{"reason", "shed"}});
    m.counter.value = static_cast<double>(shed);
    accept_failures.metric.push_back(m);
  }
  auto per_worker =
      Family("onedomain_worker_connections_active",
             "Client connections open now, by worker (how evenly they spread).", MetricType::Gauge);
  auto handoffs =
      Family("onedomain_downstream_handoffs_total",
             "Client connections a worker accepted and handed to a less loaded one (SO_REUSEPORT "
             "spreads them by address hash, not by load).",
             MetricType::Counter);
  {
    uint64_t moved = 0;
    for (size_t i = 0; i < workers_.size(); ++i) {
      prometheus::ClientMetric m = Labelled({{"worker", std::to_string(i)}});
      m.gauge.value = static_cast<double>(workers_[i].totals->downstream_active.Get());
      per_worker.metric.push_back(std::move(m));
      moved += workers_[i].totals->handoffs.Get();
    }
    prometheus::ClientMetric m;
    m.counter.value = static_cast<double>(moved);
    handoffs.metric.push_back(std::move(m));
  }

  auto requests = Family("onedomain_http_requests_total",
                         "HTTP requests answered, by route and status code.", MetricType::Counter);
  auto duration = Family("onedomain_http_request_duration_seconds",
                         "Time from a request's header to the last byte of its response.",
                         MetricType::Histogram);
  auto upgrades = Family("onedomain_websocket_upgrades_total",
                         "WebSocket upgrade requests, by route and result.", MetricType::Counter);
  auto ws_active = Family("onedomain_websocket_connections_active",
                          "WebSocket tunnels open now, by route.", MetricType::Gauge);
  auto ws_bytes = Family("onedomain_websocket_bytes_total",
                         "Bytes relayed through WebSocket tunnels, by route and direction.",
                         MetricType::Counter);
  for (uint32_t slot = 0; slot < route_names_.size(); ++slot) {
    const std::string& route = route_names_[slot];
    std::array<uint64_t, kStatusCodes> codes{};
    std::array<uint64_t, kStatusCodes> codes_h2{};
    std::array<uint64_t, kDurationBounds.size() + 1> buckets{};
    std::array<uint64_t, static_cast<size_t>(UpgradeResult::kCount)> ups{};
    std::array<uint64_t, static_cast<size_t>(UpgradeResult::kCount)> ups_h2{};
    double sum = 0;
    int64_t active = 0;
    uint64_t to_up = 0, to_client = 0;
    for (const PerWorker& w : workers_) {
      const RouteCounters& c = *w.routes[slot];
      for (size_t i = 0; i < kStatusCodes; ++i) {
        codes[i] += c.codes[i].Get();
        codes_h2[i] += c.codes_http2[i].Get();
      }
      for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += c.duration_buckets[i].Get();
      for (size_t i = 0; i < ups.size(); ++i) {
        ups[i] += c.upgrades[i].Get();
        ups_h2[i] += c.upgrades_http2[i].Get();
      }
      sum += c.duration_sum.load(std::memory_order_relaxed);
      active += c.websocket_active.Get();
      to_up += c.websocket_bytes_to_upstream.Get();
      to_client += c.websocket_bytes_to_client.Get();
    }
    uint64_t count = 0;
    for (size_t code = 0; code < kStatusCodes; ++code) {
      if (codes[code] == 0) continue;
      // Read apart from the total, so a request counted in between may make http2 exceed
      // it for one scrape: clamp.
      const uint64_t h2 = std::min(codes_h2[code], codes[code]);
      const std::array<std::pair<const char*, uint64_t>, 2> by_protocol = {
          {{"http1", codes[code] - h2}, {"http2", h2}}};
      for (const auto& [protocol, n] : by_protocol) {
        if (n == 0) continue;
        auto m = Labelled({{"route", route}, {"code", str::Cat(code)}, {"protocol", protocol}});
        m.counter.value = static_cast<double>(n);
        requests.metric.push_back(std::move(m));
      }
    }
    for (uint64_t b : buckets) count += b;
    if (count > 0) {
      auto m = Labelled({{"route", route}});
      m.histogram.sample_count = count;
      m.histogram.sample_sum = sum;
      uint64_t cumulative = 0;
      for (size_t i = 0; i < buckets.size(); ++i) {
        cumulative += buckets[i];
        m.histogram.bucket.push_back({cumulative, i < kDurationBounds.size()
                                                      ? kDurationBounds[i]
                                                      : std::numeric_limits<double>::infinity()});
      }
      duration.metric.push_back(std::move(m));
    }
    for (size_t i = 0; i < ups.size(); ++i) {
      if (ups[i] == 0) continue;
      const uint64_t h2 = std::min(ups_h2[i], ups[i]);
      const std::array<std::pair<const char*, uint64_t>, 2> by_protocol = {
          {{"http1", ups[i] - h2}, {"http2", h2}}};
      for (const auto& [protocol, n] : by_protocol) {
        if (n == 0) continue;
        auto m =
            Labelled({{"route", route},
                      {"result", std::string(UpgradeResultName(static_cast<UpgradeResult>(i)))},
                      {"protocol", protocol}});
        m.counter.value = static_cast<double>(n);
        upgrades.metric.push_back(std::move(m));
      }
    }
    if (slot != kNoRouteSlot) {
      auto m = Labelled({{"route", route}});
      m.gauge.value = static_cast<double>(active);
      ws_active.metric.push_back(std::move(m));
      m = Labelled({{"route", route}, {"direction", "client_to_upstream"}});
      m.counter.value = static_cast<double>(to_up);
      ws_bytes.metric.push_back(m);
      m = Labelled({{"route", route}, {"direction", "upstream_to_client"}});
      m.counter.value = static_cast<double>(to_client);
      ws_bytes.metric.push_back(std::move(m));
    }
  }

  auto up_active =
      Family("onedomain_upstream_connections_active",
             "Upstream connections open now (idle and busy), by cluster.", MetricType::Gauge);
  auto up_total = Family("onedomain_upstream_connections_total",
                         "Upstream connections opened, by cluster.", MetricType::Counter);
  auto up_stale = Family("onedomain_upstream_pool_stale_total",
                         "Idle pooled upstream connections found closed by the upstream, or "
                         "holding bytes no request asked for, and discarded before reuse, by "
                         "cluster.",
                         MetricType::Counter);
  auto up_fail =
      Family("onedomain_upstream_connect_failures_total",
             "Upstream connection attempts that failed, by cluster.", MetricType::Counter);
  auto up_retry =
      Family("onedomain_upstream_retries_total",
             "Requests retried on a fresh upstream connection, by cluster.", MetricType::Counter);
  auto up_eject = Family("onedomain_upstream_ejections_total",
                         "Endpoints ejected by passive outlier detection, by cluster "
                         "(per worker: each worker ejects on its own observations).",
                         MetricType::Counter);
  for (uint32_t slot = 0; slot < cluster_names_.size(); ++slot) {
    int64_t active = 0;
    uint64_t fails = 0, retries = 0, ejections = 0, opened = 0, stale = 0;
    for (const PerWorker& w : workers_) {
      const ClusterCounters& c = *w.clusters[slot];
      active += c.connections_active.Get();
      opened += c.connections_total.Get();
      stale += c.pool_stale.Get();
      fails += c.connect_failures.Get();
      retries += c.retries.Get();
      ejections += c.ejections.Get();
    }
    const std::string& cluster = cluster_names_[slot];
    auto m = Labelled({{"cluster", cluster}});
    m.gauge.value = static_cast<double>(active);
    up_active.metric.push_back(m);
    m = Labelled({{"cluster", cluster}});
    m.counter.value = static_cast<double>(opened);
    up_total.metric.push_back(m);
    m.counter.value = static_cast<double>(stale);
    up_stale.metric.push_back(m);
    m.counter.value = static_cast<double>(fails);
    up_fail.metric.push_back(m);
    m.counter.value = static_cast<double>(retries);
    up_retry.metric.push_back(m);
    m.counter.value = static_cast<double>(ejections);
    up_eject.metric.push_back(std::move(m));
  }

  for (auto* f : {&conns_active, &conns_total, &bytes, &accept_failures, &per_worker, &handoffs,
                  &requests, &duration, &upgrades, &ws_active, &ws_bytes, &up_active, &up_total,
                  &up_stale, &up_fail, &up_retry, &up_eject}) {
    out.push_back(std::move(*f));
  }
  CollectWebSocketFamilies(out);
  CollectCookieFamilies(out);
  CollectLimitFamilies(out);
  CollectHttp2Families(out);
  return out;
}

void StatsCatalog::CollectCookieFamilies(std::vector<prometheus::MetricFamily>& out) const {
  using prometheus::MetricType;
  auto rewrites = Family("onedomain_cookie_rewrites_total",
                         "Set-Cookie headers changed by a cookie-policy rule, by route and rule "
                         "(index into the policy that applies to the route).",
                         MetricType::Counter);
  auto unparsed = Family("onedomain_cookie_unparsed_total",
                         "Set-Cookie values passed through untouched because they could not be "
                         "parsed as a cookie, by route.",
                         MetricType::Counter);
  for (uint32_t slot = 0; slot < route_names_.size(); ++slot) {
    std::array<uint64_t, 64> hits{};
    uint64_t bad = 0;
    for (const PerWorker& w : workers_) {
      const CookieCounters& c = w.routes[slot]->cookies;
      for (size_t i = 0; i < hits.size(); ++i) hits[i] += c.rule_hits[i].Get();
      bad += c.unparsed.Get();
    }
    for (size_t i = 0; i < hits.size(); ++i) {
      if (hits[i] == 0) continue;
      auto m = Labelled({{"route", route_names_[slot]},
                         {"rule", CompiledCookiePolicy::RuleLabel(static_cast<int>(i))}});
      m.counter.value = static_cast<double>(hits[i]);
      rewrites.metric.push_back(std::move(m));
    }
    if (bad > 0) {
      auto m = Labelled({{"route", route_names_[slot]}});
      m.counter.value = static_cast<double>(bad);
      unparsed.metric.push_back(std::move(m));
    }
  }
  out.push_back(std::move(rewrites));
  out.push_back(std::move(unparsed));
}

void StatsCatalog::CollectHttp2Families(std::vector<prometheus::MetricFamily>& out) const {
  auto active = Family("onedomain_http2_streams_active", "HTTP/2 request streams being served now.",
                       prometheus::MetricType::Gauge);
  auto goaways = Family("onedomain_http2_goaways_total",
                        "GOAWAY frames sent to HTTP/2 clients, by error code.",
                        prometheus::MetricType::Counter);
  auto errors = Family("onedomain_http2_protocol_errors_total",
                       "HTTP/2 protocol errors and abuses answered (stream or connection "
                       "errors), by reason.",
                       prometheus::MetricType::Counter);
  int64_t streams = 0;
  std::array<uint64_t, static_cast<size_t>(Http2Goaway::kCount)> g{};
  std::array<uint64_t, static_cast<size_t>(Http2Error::kCount)> e{};
  for (const PerWorker& w : workers_) {
    streams += w.totals->http2_streams_active.Get();
    for (size_t i = 0; i < g.size(); ++i) g[i] += w.totals->http2_goaways[i].Get();
    for (size_t i = 0; i < e.size(); ++i) e[i] += w.totals->http2_errors[i].Get();
  }
  prometheus::ClientMetric m;
  m.gauge.value = static_cast<double>(streams);
  active.metric.push_back(m);
  for (size_t i = 0; i < g.size(); ++i) {
    m = Labelled({{"reason", std::string(Http2GoawayName(static_cast<Http2Goaway>(i)))}});
    m.counter.value = static_cast<double>(g[i]);
    goaways.metric.push_back(m);
  }
  for (size_t i = 0; i < e.size(); ++i) {
    m = Labelled({{"reason", std::string(Http2ErrorName(static_cast<Http2Error>(i)))}});
    m.counter.value = static_cast<double>(e[i]);
    errors.metric.push_back(m);
  }
  out.push_back(std::move(active));
  out.push_back(std::move(goaways));
  out.push_back(std::move(errors));
}

CounterTotals StatsCatalog::Totals() const {
  std::lock_guard lock(mu_);
  CounterTotals t;
  int64_t active = 0, ws_active = 0;
  for (const PerWorker& w : workers_) {
    active += w.totals->downstream_active.Get();
    t.downstream_connections_total += w.totals->downstream_total.Get();
    t.bytes_received += w.totals->bytes_received.Get();
    t.bytes_sent += w.totals->bytes_sent.Get();
  }
  t.downstream_connections_active = active > 0 ? static_cast<uint64_t>(active) : 0;
  static constexpr std::array<std::string_view, 5> kClasses = {"1xx", "2xx", "3xx", "4xx", "5xx"};
  for (uint32_t slot = 0; slot < route_names_.size(); ++slot) {
    std::array<uint64_t, 5> classes{};
    for (const PerWorker& w : workers_) {
      const RouteCounters& c = *w.routes[slot];
      for (size_t code = 100; code < kStatusCodes; ++code)
        classes[code / 100 - 1] += c.codes[code].Get();
      for (size_t i = 0; i < c.upgrades.size(); ++i) {
        const uint64_t n = c.upgrades[i].Get();
        if (n > 0) {
          t.websocket_upgrades[std::string(UpgradeResultName(static_cast<UpgradeResult>(i)))] += n;
        }
      }
      ws_active += c.websocket_active.Get();
      for (size_t i = 0; i < c.ws.closes.size(); ++i) {
        const size_t code_slot = i % kWsCloseCodeSlots;
        if (code_slot != 0 && code_slot != 1) t.websocket_closes_abnormal += c.ws.closes[i].Get();
      }
    }
    for (size_t i = 0; i < classes.size(); ++i) {
      if (classes[i] > 0)
        t.http_requests[str::Cat(route_names_[slot], "|", kClasses[i])] = classes[i];
    }
  }
  t.websocket_connections_active = ws_active > 0 ? static_cast<uint64_t>(ws_active) : 0;
  for (uint32_t slot = 0; slot < cluster_names_.size(); ++slot) {
    for (const PerWorker& w : workers_)
      t.upstream_connect_failures += w.clusters[slot]->connect_failures.Get();
  }
  return t;
}

// ---- client limits (issue 20) --------------------------------------------------------------

std::string_view LimitReasonName(LimitReason r) {
  switch (r) {
    case LimitReason::kConnections:
      return "connections";
    case LimitReason::kWebSocketsPerClient:
      return "websockets_per_client";
    case LimitReason::kWebSocketsPerCookie:
      return "websockets_per_cookie";
    case LimitReason::kUpgradeRate:
      return "upgrade_rate";
    case LimitReason::kRequestRate:
      return "request_rate";
    case LimitReason::kProxyHeader:
      return "proxy_header";
    case LimitReason::kCount:
      break;
  }
  return "unknown";
}

void StatsCatalog::CollectLimitFamilies(std::vector<prometheus::MetricFamily>& out) const {
  using prometheus::MetricType;
  auto rejections = Family("onedomain_limit_rejections_total",
                           "Requests and connections refused by a client limit, by route "
                           "(\"none\": before any route) and reason.",
                           MetricType::Counter);
  auto paused = Family("onedomain_websocket_buffer_full_total",
                       "Times a WebSocket tunnel direction held max_buffered_bytes for a slow "
                       "reader and paused its sender, by route and direction.",
                       MetricType::Counter);
  static constexpr const char* kDirections[] = {"to_upstream", "to_client"};
  for (uint32_t slot = 0; slot < route_names_.size(); ++slot) {
    std::array<uint64_t, static_cast<size_t>(LimitReason::kCount)> sums{};
    std::array<uint64_t, 2> pauses{};
    for (const PerWorker& w : workers_) {
      const RouteCounters& c = *w.routes[slot];
      for (size_t i = 0; i < sums.size(); ++i) sums[i] += c.limit_rejections[i].Get();
      for (size_t i = 0; i < pauses.size(); ++i) pauses[i] += c.websocket_paused[i].Get();
    }
    for (size_t i = 0; i < sums.size(); ++i) {
      if (sums[i] == 0) continue;
      auto m = Labelled({{"route", route_names_[slot]},
                         {"reason", std::string(LimitReasonName(static_cast<LimitReason>(i)))}});
      m.counter.value = static_cast<double>(sums[i]);
      rejections.metric.push_back(std::move(m));
    }
    for (size_t i = 0; i < pauses.size(); ++i) {
      if (pauses[i] == 0) continue;
      auto m = Labelled({{"route", route_names_[slot]}, {"direction", kDirections[i]}});
      m.counter.value = static_cast<double>(pauses[i]);
      paused.metric.push_back(std::move(m));
    }
  }
  out.push_back(std::move(rejections));
  out.push_back(std::move(paused));
}

}  // namespace onedomain::dataplane::stats
