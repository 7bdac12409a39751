#include "common/config/validation.h"

#include <gtest/gtest.h>

#include "onedomain/v1/bootstrap.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::config {
namespace {

v1::Snapshot ValidSnapshot() {
  v1::Snapshot s;
  s.mutable_site()->add_origins("https://amir.hirecj.ai");
  s.mutable_site()->set_cookie_domain(".hirecj.ai");
  auto* l = s.add_listeners();
  l->set_name("main");
  l->set_port(0);
  auto* c = s.add_clusters();
  c->set_name("agents");
  auto* e = c->add_endpoints();
  e->set_host("127.0.0.1");
  e->set_port(8000);
  auto* r = s.add_routes();
  r->set_name("api");
  r->mutable_match()->set_prefix("/api/v1/");
  r->set_cluster("agents");
  return s;
}

bool HasError(const FieldErrors& errors, const std::string& path, const std::string& fragment) {
  for (const auto& e : errors) {
    if (e.path == path && e.message.find(fragment) != std::string::npos) return true;
  }
  return false;
}

TEST(Validation, ValidSnapshotHasNoErrors) {
  EXPECT_TRUE(ValidateSnapshot(ValidSnapshot()).empty());
}

TEST(Validation, DuplicateNames) {
  auto s = ValidSnapshot();
  *s.add_clusters() = s.clusters(0);
  *s.add_routes() = s.routes(0);
  auto errors = ValidateSnapshot(s);
  EXPECT_TRUE(HasError(errors, "clusters[1].name", "duplicate name 'agents'"));
  EXPECT_TRUE(HasError(errors, "routes[1].name", "duplicate name 'api'"));
}

TEST(Validation, RouteToUnknownCluster) {
  auto s = ValidSnapshot();
  s.mutable_routes(0)->set_cluster("frontend");
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "routes[0].cluster", "unknown cluster 'frontend'"));
}

TEST(Validation, EmptyClusterAndBadEndpoints) {
  auto s = ValidSnapshot();
  auto* c = s.add_clusters();
  c->set_name("empty");
  auto* e = s.mutable_clusters(0)->add_endpoints();
  e->set_host("bad host!");
  e->set_port(70000);
  auto errors = ValidateSnapshot(s);
  EXPECT_TRUE(HasError(errors, "clusters[1].endpoints", "at least one endpoint"));
  EXPECT_TRUE(HasError(errors, "clusters[0].endpoints[1].host", "not a host name"));
  EXPECT_TRUE(HasError(errors, "clusters[0].endpoints[1].port", "1..65535"));
}

TEST(Validation, RouteMatchRules) {
  auto s = ValidSnapshot();
  s.mutable_routes(0)->mutable_match()->set_exact("/x");
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "routes[0].match", "exactly one"));
  s.mutable_routes(0)->mutable_match()->clear_exact();
  s.mutable_routes(0)->mutable_match()->set_prefix("api");
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "routes[0].match.prefix", "start with '/'"));
  s.mutable_routes(0)->mutable_match()->clear_prefix();
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "routes[0].match", "exactly one"));
}

TEST(Validation, PrefixRewriteNeedsPrefixMatch) {
  auto s = ValidSnapshot();
  s.mutable_routes(0)->set_prefix_rewrite("/");
  EXPECT_TRUE(ValidateSnapshot(s).empty());
  s.mutable_routes(0)->mutable_match()->clear_prefix();
  s.mutable_routes(0)->mutable_match()->set_exact("/x");
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "routes[0].prefix_rewrite", "only allowed"));
}

TEST(Validation, MalformedOrigins) {
  auto s = ValidSnapshot();
  s.mutable_site()->add_origins("amir.hirecj.ai");
  s.mutable_websocket_policy()->add_allowed_origins("https://amir.hirecj.ai/path");
  s.mutable_websocket_policy()->add_allowed_origins("*");
  s.mutable_websocket_policy()->add_allowed_origins("http://localhost:3456");
  s.mutable_websocket_policy()->add_allowed_origins("http://[::1]:3456");
  auto errors = ValidateSnapshot(s);
  EXPECT_TRUE(HasError(errors, "site.origins[1]", "not an origin"));
  EXPECT_TRUE(HasError(errors, "websocket_policy.allowed_origins[0]", "not an origin"));
  EXPECT_EQ(errors.size(), 2u) << ToStatus(errors);
}

TEST(Validation, CookieDomainRewriteMustTargetSiteOrParent) {
  auto s = ValidSnapshot();
  auto* r = s.mutable_cookie_policy()->add_domain_rewrites();
  r->set_from("agents-service");
  r->set_to(".hirecj.ai");
  EXPECT_TRUE(ValidateSnapshot(s).empty());
  r->set_to("evil.com");
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "cookie_policy.domain_rewrites[0].to",
                       "neither the site's cookie domain"));
  r->set_to(".ai");
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "cookie_policy.domain_rewrites[0].to", "neither"));
  r->set_to("bad domain");
  EXPECT_TRUE(
      HasError(ValidateSnapshot(s), "cookie_policy.domain_rewrites[0].to", "not a cookie domain"));
  s.mutable_site()->clear_cookie_domain();
  r->set_to(".hirecj.ai");
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "cookie_policy.domain_rewrites[0].to",
                       "site.cookie_domain must be set"));
}

TEST(Validation, SameSiteNoneRequiresSecure) {
  auto s = ValidSnapshot();
  auto* rule = s.mutable_routes(0)->mutable_cookie_policy()->add_attribute_rules();
  rule->set_name("sess_*");
  rule->set_same_site(v1::SAME_SITE_NONE);
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "routes[0].cookie_policy.attribute_rules[0].same_site",
                       "requires secure"));
  rule->set_secure(true);
  EXPECT_TRUE(ValidateSnapshot(s).empty());
}

TEST(Validation, NamePatterns) {
  EXPECT_TRUE(IsValidNamePattern("sess_*"));
  EXPECT_TRUE(IsValidNamePattern("*"));
  EXPECT_TRUE(IsValidNamePattern("session"));
  EXPECT_FALSE(IsValidNamePattern(""));
  EXPECT_FALSE(IsValidNamePattern("a*b"));
  EXPECT_FALSE(IsValidNamePattern("**"));
  EXPECT_FALSE(IsValidNamePattern("a b"));
  EXPECT_FALSE(IsValidNamePattern("a;b"));
}

TEST(Validation, DomainOrParent) {
  EXPECT_TRUE(IsDomainOrParent(".hirecj.ai", ".hirecj.ai"));
  EXPECT_TRUE(IsDomainOrParent("hirecj.ai", "amir.hirecj.ai"));
  EXPECT_FALSE(IsDomainOrParent("ai", "hirecj.ai"));
  EXPECT_FALSE(IsDomainOrParent("ecj.ai", "hirecj.ai"));
  EXPECT_FALSE(IsDomainOrParent("amir.hirecj.ai", "hirecj.ai"));
}

TEST(Validation, ListenerRules) {
  auto s = ValidSnapshot();
  auto* l = s.add_listeners();
  l->set_name("tls");
  l->set_port(8443);
  l->mutable_tls();
  l->mutable_limits()->set_max_header_bytes(10);
  l->set_address("localhost");
  auto errors = ValidateSnapshot(s);
  EXPECT_TRUE(HasError(errors, "listeners[1].tls.cert_file", "required"));
  EXPECT_TRUE(HasError(errors, "listeners[1].tls.key_file", "required"));
  EXPECT_TRUE(HasError(errors, "listeners[1].limits.max_header_bytes", "1024..1048576"));
  EXPECT_TRUE(HasError(errors, "listeners[1].address", "not an IPv4 or IPv6"));
}

TEST(Validation, ClientLimitsAndAddresses) {
  auto s = ValidSnapshot();
  s.mutable_listeners(0)->set_proxy_protocol("v3");
  s.mutable_site()->add_trusted_proxies("10.0.0.0/8");
  s.mutable_site()->add_trusted_proxies("2001:db8::/129");
  s.mutable_site()->add_trusted_proxies("proxy.local");
  auto* g = s.mutable_client_limits();
  g->set_max_websockets_per_client(0);
  g->mutable_upgrade_rate()->set_per_second(-1);
  g->mutable_request_rate()->set_per_second(5);
  g->mutable_request_rate()->set_burst(2000000);
  g->set_table_entries(10);
  g->set_websocket_cookie("*");
  auto* r = s.mutable_routes(0);
  r->set_websocket(true);
  r->mutable_client_limits()->set_max_connections_per_client(3);
  r->mutable_client_limits()->set_table_entries(4096);
  r->mutable_client_limits()->set_max_websockets_per_cookie(2);
  r->mutable_websocket_policy()->set_max_buffered_bytes(10);
  const auto errors = ValidateSnapshot(s);
  EXPECT_TRUE(HasError(errors, "listeners[0].proxy_protocol", "v1, v2, any or off, got 'v3'"));
  EXPECT_FALSE(HasError(errors, "site.trusted_proxies[0]", ""));
  EXPECT_TRUE(HasError(errors, "site.trusted_proxies[1]", "not a CIDR"));
  EXPECT_TRUE(HasError(errors, "site.trusted_proxies[2]", "not a CIDR"));
  EXPECT_TRUE(HasError(errors, "client_limits.max_websockets_per_client", "1..1000000, got 0"));
  EXPECT_TRUE(HasError(errors, "client_limits.upgrade_rate.per_second", "must be > 0"));
  EXPECT_TRUE(HasError(errors, "client_limits.request_rate.burst", "0..1000000"));
  EXPECT_TRUE(HasError(errors, "client_limits.table_entries", "1024..16777216"));
  EXPECT_TRUE(HasError(errors, "client_limits.websocket_cookie", "not a cookie name"));
  EXPECT_TRUE(
      HasError(errors, "routes[0].client_limits.max_connections_per_client", "snapshot-wide only"));
  EXPECT_TRUE(HasError(errors, "routes[0].client_limits.table_entries", "snapshot-wide only"));
  EXPECT_TRUE(HasError(errors, "routes[0].websocket_policy.max_buffered_bytes", "1024..65536"));

  // A per-cookie cap with no cookie to count (no websocket_cookie, no required_cookie).
  auto t = ValidSnapshot();
  t.mutable_routes(0)->set_websocket(true);
  t.mutable_client_limits()->set_max_websockets_per_cookie(2);
  EXPECT_TRUE(HasError(ValidateSnapshot(t), "routes[0].client_limits.max_websockets_per_cookie",
                       "needs a cookie to count"));
  t.mutable_websocket_policy()->set_required_cookie("sess_*");
  EXPECT_TRUE(ValidateSnapshot(t).empty());
}

TEST(Validation, ListenerHttp2Rules) {
  auto s = ValidSnapshot();
  auto* l = s.add_listeners();
  l->set_name("tls");
  l->set_port(8443);
  l->mutable_tls()->set_cert_file("c.pem");
  l->mutable_tls()->set_key_file("k.pem");
  l->mutable_http2()->set_prior_knowledge(true);
  l->mutable_http2()->set_max_concurrent_streams(1001);
  auto errors = ValidateSnapshot(s);
  EXPECT_TRUE(HasError(errors, "listeners[1].http2.prior_knowledge", "only for plain listeners"));
  EXPECT_TRUE(HasError(errors, "listeners[1].http2.max_concurrent_streams", "1..1000"));
  l->clear_tls();
  l->mutable_http2()->set_max_concurrent_streams(1000);
  EXPECT_TRUE(ValidateSnapshot(s).empty());
}

TEST(Validation, DuplicateListenerPort) {
  auto s = ValidSnapshot();
  s.mutable_listeners(0)->set_port(3456);
  auto* l = s.add_listeners();
  l->set_name("other");  // unset port = 3456
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "listeners[1].port", "already used"));
}

TEST(Validation, NoListeners) {
  auto s = ValidSnapshot();
  s.clear_listeners();
  EXPECT_TRUE(HasError(ValidateSnapshot(s), "listeners", "at least one"));
}

TEST(Validation, InvalidNames) {
  auto s = ValidSnapshot();
  s.mutable_routes(0)->set_name("has space");
  s.mutable_listeners(0)->clear_name();
  auto errors = ValidateSnapshot(s);
  EXPECT_TRUE(HasError(errors, "routes[0].name", "not a valid name"));
  EXPECT_TRUE(HasError(errors, "listeners[0].name", "required"));
}

TEST(Validation, BootstrapPrefixesSnapshotPaths) {
  v1::DataplaneBootstrap b;
  *b.mutable_snapshot() = ValidSnapshot();
  b.mutable_snapshot()->mutable_routes(0)->set_cluster("nope");
  b.mutable_access_log()->set_format("xml");
  auto errors = ValidateDataplaneBootstrap(b);
  EXPECT_TRUE(HasError(errors, "snapshot.routes[0].cluster", "unknown cluster"));
  EXPECT_TRUE(HasError(errors, "access_log.format", "json or text"));
}

TEST(Validation, BootstrapControlplaneAddress) {
  v1::DataplaneBootstrap b;
  b.mutable_controlplane()->set_address("controlplane");
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "controlplane.address", "not host:port"));
  b.mutable_controlplane()->set_address("controlplane:18000");
  EXPECT_TRUE(ValidateDataplaneBootstrap(b).empty()) << ToStatus(ValidateDataplaneBootstrap(b));
  b.mutable_controlplane()->set_address("[::1]:18000");
  EXPECT_TRUE(ValidateDataplaneBootstrap(b).empty());
}

// worker_slice: 0s (the kernel's) or what Linux accepts for a thread, 100us to 100ms.
TEST(Validation, BootstrapWorkerSlice) {
  v1::DataplaneBootstrap b;
  b.mutable_controlplane()->set_address("controlplane:18000");
  for (const int64_t us : {0, 100, 500, 100000}) {
    b.mutable_worker_slice()->set_seconds(us / 1000000);
    b.mutable_worker_slice()->set_nanos(static_cast<int32_t>(us % 1000000 * 1000));
    EXPECT_TRUE(ValidateDataplaneBootstrap(b).empty())
        << us << "us: " << ToStatus(ValidateDataplaneBootstrap(b));
  }
  b.mutable_worker_slice()->set_seconds(0);
  b.mutable_worker_slice()->set_nanos(50000);
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "worker_slice", "100us to 100ms, got 50us"));
  b.mutable_worker_slice()->set_nanos(200000000);
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "worker_slice", "got 200000us"));
  b.mutable_worker_slice()->set_seconds(-1);
  b.mutable_worker_slice()->set_nanos(0);
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "worker_slice", "got -1s"));
  b.mutable_worker_slice()->set_seconds(315576000000);  // the largest Duration: no overflow
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "worker_slice", "got 315576000000s"));
}

TEST(Validation, ControlplaneConfig) {
  v1::ControlplaneConfig c;
  c.mutable_store()->set_keep_versions(1);
  c.mutable_grpc()->set_cert_file("a.pem");
  *c.mutable_seed() = ValidSnapshot();
  c.mutable_seed()->mutable_clusters(0)->clear_endpoints();
  auto errors = ValidateControlplaneConfig(c);
  EXPECT_TRUE(HasError(errors, "store.keep_versions", "at least 2"));
  EXPECT_TRUE(HasError(errors, "grpc.cert_file", "go together"));
  EXPECT_TRUE(HasError(errors, "seed.clusters[0].endpoints", "at least one endpoint"));
}

TEST(Validation, BootstrapNodeIdIsWhatTheControlPlaneAccepts) {
  v1::DataplaneBootstrap b;
  b.mutable_controlplane()->set_address("controlplane:18000");
  b.mutable_node()->set_id("od-onedomain-dataplane-7d9f8b6c5-x2x4q");
  EXPECT_TRUE(ValidateDataplaneBootstrap(b).empty()) << ToStatus(ValidateDataplaneBootstrap(b));
  b.mutable_node()->set_id("web 1");
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "node.id", "at most 63"));
  b.mutable_node()->set_id(std::string(64, 'a'));
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "node.id", "at most 63"));
  b.mutable_node()->clear_id();
  b.mutable_controlplane()->set_cert_file("c.pem");
  b.mutable_controlplane()->set_key_file("c.key");
  EXPECT_TRUE(HasError(ValidateDataplaneBootstrap(b), "controlplane.cert_file", "ca_file"));
}

TEST(Validation, ControlplaneNodeAccess) {
  v1::ControlplaneConfig c;
  c.mutable_nodes()->set_max_nodes(0);
  c.mutable_nodes()->mutable_forget_after()->set_nanos(1000);
  c.mutable_grpc()->set_client_ca_file("ca.pem");
  auto errors = ValidateControlplaneConfig(c);
  EXPECT_TRUE(HasError(errors, "nodes.max_nodes", "at least 1"));
  EXPECT_TRUE(HasError(errors, "nodes.forget_after", "at least 1s"));
  EXPECT_TRUE(HasError(errors, "grpc.client_ca_file", "cert_file"));
}

TEST(Validation, ToStatusJoinsPaths) {
  auto st = ToStatus({{"a.b", "bad"}, {"", "whole"}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(st.message()), "a.b: bad; whole");
  EXPECT_TRUE(ToStatus({}).ok());
}

}  // namespace
}  // namespace onedomain::config
