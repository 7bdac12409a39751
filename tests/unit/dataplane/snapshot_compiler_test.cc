#include "dataplane/server/snapshot_compiler.h"

#include <gtest/gtest.h>

#include "dataplane/stats/dataplane_stats.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane {
namespace {

v1::Snapshot Minimal() {
  v1::Snapshot s;
  s.set_version(7);
  auto* l = s.add_listeners();
  l->set_name("main");
  l->set_address("127.0.0.1");
  l->set_port(0);
  auto* c = s.add_clusters();
  c->set_name("agents");
  auto* e = c->add_endpoints();
  e->set_host("127.0.0.1");
  e->set_port(8000);
  auto* r = s.add_routes();
  r->set_name("api");
  r->mutable_match()->set_prefix("/api/");
  r->set_cluster("agents");
  return s;
}

TEST(SnapshotCompilerTest, AppliesDefaults) {
  auto compiled = CompileSnapshot(std::make_shared<v1::Snapshot>(Minimal()), nullptr, {});
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  const CompiledSnapshot& c = **compiled;
  EXPECT_EQ(c.version, 7u);
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0]->limits.max_header_bytes, 65536u);
  EXPECT_EQ(c.listeners[0]->limits.header_timeout, std::chrono::seconds(10));
  EXPECT_EQ(c.listeners[0]->limits.max_body_bytes, 1ull << 30);
  EXPECT_EQ(c.listeners[0]->forwarded_proto, "http");
  ASSERT_EQ(c.clusters.size(), 1u);
  EXPECT_EQ(c.clusters[0]->pool.max_idle, 0u);  // no cap: the pool follows demand
  EXPECT_EQ(c.clusters[0]->outlier.consecutive_failures, 5u);
  EXPECT_EQ(c.clusters[0]->connect_timeout, std::chrono::seconds(5));
  ASSERT_EQ(c.clusters[0]->endpoints.size(), 1u);
  EXPECT_TRUE(c.clusters[0]->endpoints[0].literal);
  EXPECT_EQ(c.clusters[0]->endpoints[0].addresses.size(), 1u);
  EXPECT_EQ(c.clusters[0]->endpoints[0].authority, "127.0.0.1:8000");
  ASSERT_EQ(c.routes->routes().size(), 1u);
  EXPECT_EQ(c.routes->routes()[0].cookie_policy, nullptr);  // no policy: byte for byte
}

TEST(SnapshotCompilerTest, ReusesUnchangedClustersAndRegistersStats) {
  stats::StatsCatalog catalog(2);
  CompileOptions options;
  options.catalog = &catalog;
  auto first = CompileSnapshot(std::make_shared<v1::Snapshot>(Minimal()), nullptr, options);
  ASSERT_TRUE(first.ok());
  v1::Snapshot next = Minimal();
  next.set_version(8);
  auto* other = next.add_clusters();
  other->CopyFrom(next.clusters(0));
  other->set_name("frontend");
  auto second = CompileSnapshot(std::make_shared<v1::Snapshot>(next), first->get(), options);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->clusters[0], (*first)->clusters[0]);  // same object: pools survive
  EXPECT_NE((*second)->clusters[1], (*first)->clusters[0]);
  EXPECT_NE((*second)->clusters[1]->stats_slot, (*second)->clusters[0]->stats_slot);
  EXPECT_EQ((*second)->routes->routes()[0].stats_slot, (*first)->routes->routes()[0].stats_slot);
  EXPECT_NE((*second)->routes->routes()[0].stats_slot, stats::StatsCatalog::kNoRouteSlot);
}

TEST(SnapshotCompilerTest, NodeLocalErrorsNameTheField) {
  v1::Snapshot s = Minimal();
  s.mutable_listeners(0)->mutable_tls()->set_cert_file("/nonexistent/cert.pem");
  s.mutable_listeners(0)->mutable_tls()->set_key_file("/nonexistent/key.pem");
  auto compiled = CompileSnapshot(std::make_shared<v1::Snapshot>(s), nullptr, {});
  ASSERT_FALSE(compiled.ok());
  EXPECT_NE(compiled.status().message().find("listeners[0].tls"), std::string::npos)
      << compiled.status();
  EXPECT_NE(compiled.status().message().find("/nonexistent/cert.pem"), std::string::npos);

  v1::Snapshot up = Minimal();
  up.mutable_clusters(0)->mutable_tls()->set_server_name("x");
  auto unimplemented = CompileSnapshot(std::make_shared<v1::Snapshot>(up), nullptr, {});
  ASSERT_FALSE(unimplemented.ok());
  EXPECT_EQ(unimplemented.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(unimplemented.status().message().find("clusters[0].tls"), std::string::npos);
}

TEST(SnapshotCompilerTest, RouteOverridesAndCookiePolicies) {
  v1::Snapshot s = Minimal();
  s.mutable_cookie_policy()->add_attribute_rules()->set_name("*");
  s.mutable_cookie_policy()->mutable_attribute_rules(0)->set_secure(true);
  s.mutable_websocket_policy()->add_allowed_origins("https://a.example");
  auto* ws = s.add_routes();
  ws->set_name("ws");
  ws->mutable_match()->set_prefix("/ws/");
  ws->set_cluster("agents");
  ws->set_websocket(true);
  ws->mutable_websocket_policy()->add_allowed_origins("https://b.example");
  ws->mutable_cookie_policy();  // present but empty: replaces the global one, so none applies
  auto compiled = CompileSnapshot(std::make_shared<v1::Snapshot>(s), nullptr, {});
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  const auto& routes = (*compiled)->routes->routes();
  EXPECT_NE(routes[0].cookie_policy, nullptr);
  EXPECT_EQ(routes[1].cookie_policy, nullptr);
  ASSERT_EQ(routes[1].websocket_policy->allowed_origins_size(), 1);
  EXPECT_EQ(routes[1].websocket_policy->allowed_origins(0), "https://b.example");
  EXPECT_TRUE(routes[1].websocket);
}

}  // namespace
}  // namespace onedomain::dataplane
