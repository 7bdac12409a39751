#include "dataplane/stats/dataplane_stats.h"

#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

#include <cmath>

namespace onedomain::dataplane::stats {
namespace {

const prometheus::MetricFamily* Find(const std::vector<prometheus::MetricFamily>& fams,
                                     std::string_view name) {
  for (const auto& f : fams) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(StatsTest, SumsWorkersAndKeepsSlotsByName) {
  StatsCatalog catalog(2);
  const uint32_t api = catalog.RouteSlot("api");
  EXPECT_EQ(catalog.RouteSlot("api"), api);
  EXPECT_NE(api, StatsCatalog::kNoRouteSlot);
  catalog.route(0, api).RecordRequest(200, 0.001);
  catalog.route(1, api).RecordRequest(200, 0.002);
  catalog.route(1, api).RecordRequest(503, 0.5);
  catalog.route(0, StatsCatalog::kNoRouteSlot).RecordRequest(404, 0.0001);
  catalog.route(0, api).RecordUpgrade(UpgradeResult::kOriginRefused);
  catalog.worker(0).downstream_total.Add(3);
  catalog.worker(1).downstream_active.Inc();

  const auto fams = catalog.Collect();
  const auto* requests = Find(fams, "onedomain_http_requests_total");
  ASSERT_NE(requests, nullptr);
  double api_200 = 0, none_404 = 0;
  for (const auto& m : requests->metric) {
    if (m.label[0].value == "api" && m.label[1].value == "200") api_200 = m.counter.value;
    if (m.label[0].value == "none" && m.label[1].value == "404") none_404 = m.counter.value;
  }
  EXPECT_EQ(api_200, 2);
  EXPECT_EQ(none_404, 1);
  const auto* duration = Find(fams, "onedomain_http_request_duration_seconds");
  ASSERT_NE(duration, nullptr);
  for (const auto& m : duration->metric) {
    if (m.label[0].value != "api") continue;
    EXPECT_EQ(m.histogram.sample_count, 3u);
    EXPECT_EQ(m.histogram.bucket.back().cumulative_count, 3u);
    EXPECT_TRUE(std::isinf(m.histogram.bucket.back().upper_bound));
  }
  ASSERT_NE(Find(fams, "onedomain_websocket_upgrades_total"), nullptr);
  ASSERT_NE(Find(fams, "onedomain_upstream_connections_active"), nullptr);

  const CounterTotals t = catalog.Totals();
  EXPECT_EQ(t.downstream_connections_total, 3u);
  EXPECT_EQ(t.downstream_connections_active, 1u);
  EXPECT_EQ(t.http_requests.at("api|2xx"), 2u);
  EXPECT_EQ(t.http_requests.at("api|5xx"), 1u);
  EXPECT_EQ(t.http_requests.at("none|4xx"), 1u);
  EXPECT_EQ(t.websocket_upgrades.at("origin_refused"), 1u);
  EXPECT_EQ(t.upstream_connect_failures, 0u);
  EXPECT_EQ(t.websocket_closes_abnormal, 0u);
}

// The two totals the control plane's rollout gates read.
TEST(StatsTest, TotalsCountConnectFailuresAndAbnormalCloses) {
  StatsCatalog catalog(2);
  const uint32_t api = catalog.RouteSlot("api");
  const uint32_t agents = catalog.ClusterSlot("agents");
  catalog.cluster(0, agents).connect_failures.Add(2);
  catalog.cluster(1, agents).connect_failures.Add();
  catalog.route(0, api).ws.RecordClose(WsCloseInitiator::kClient, 1000);    // normal
  catalog.route(1, api).ws.RecordClose(WsCloseInitiator::kProxy, 1001);     // going away
  catalog.route(0, api).ws.RecordClose(WsCloseInitiator::kUpstream, 1011);  // abnormal
  catalog.route(1, api).ws.RecordClose(WsCloseInitiator::kClient, 0);       // no Close frame
  catalog.route(1, api).ws.RecordClose(WsCloseInitiator::kClient, 4000);    // "other"
  const CounterTotals t = catalog.Totals();
  EXPECT_EQ(t.upstream_connect_failures, 3u);
  EXPECT_EQ(t.websocket_closes_abnormal, 3u);
}

TEST(StatsTest, CountersAreSingleWriterRelaxed) {
  Counter c;
  for (int i = 0; i < 1000; ++i) c.Add();
  EXPECT_EQ(c.Get(), 1000u);
  Gauge g;
  g.Inc();
  g.Inc();
  g.Dec();
  EXPECT_EQ(g.Get(), 1);
}

}  // namespace
}  // namespace onedomain::dataplane::stats
