#include "controlplane/server/config_manager.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "controlplane/fleet/fleet.h"
#include "controlplane/store/file_store.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

v1::Snapshot Seed() {
  v1::Snapshot s;
  s.mutable_site()->set_cookie_domain(".hirecj.ai");
  s.add_listeners()->set_name("main");
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

class ConfigManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/od-cm-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(*FileStore::Open(dir_, 10));
    manager_ = std::make_unique<ConfigManager>(*store_, fleet_);
    const v1::Snapshot seed = Seed();
    ASSERT_TRUE(manager_->Start(&seed).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  Fleet fleet_;
  std::unique_ptr<FileStore> store_;
  std::unique_ptr<ConfigManager> manager_;
};

TEST_F(ConfigManagerTest, SeedIsVersionOne) {
  EXPECT_EQ(store_->latest_version(), 1u);
  auto h = manager_->History(v1::HistoryRequest());
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->entries_size(), 1);
  EXPECT_EQ(h->entries(0).who(), "seed");
}

TEST_F(ConfigManagerTest, SetUpstreamCommitsAndAudits) {
  v1::SetUpstreamRequest req;
  req.set_cluster("agents");
  auto* e = req.add_endpoints();
  e->set_host("127.0.0.1");
  e->set_port(8002);
  req.mutable_options()->set_reason("move to B");
  auto r = manager_->SetUpstream(req, "ops");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version(), 2u);
  EXPECT_EQ(store_->Latest()->clusters(0).endpoints(0).port(), 8002u);
  auto h = manager_->History(v1::HistoryRequest());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->entries(0).who(), "ops");
  EXPECT_EQ(h->entries(0).reason(), "move to B");
  EXPECT_EQ(h->entries(0).method(), "SetUpstream");
}

TEST_F(ConfigManagerTest, DryRunCommitsNothing) {
  v1::ApplyRequest req;
  *req.mutable_snapshot() = Seed();
  req.mutable_snapshot()->mutable_clusters(0)->mutable_endpoints(0)->set_port(9000);
  req.mutable_options()->set_dry_run(true);
  auto r = manager_->Apply(req, "ops");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->dry_run());
  EXPECT_EQ(r->version(), 2u);
  EXPECT_EQ(store_->latest_version(), 1u);
}

TEST_F(ConfigManagerTest, InvalidApplyNamesFieldPathAndCommitsNothing) {
  v1::ApplyRequest req;
  *req.mutable_snapshot() = Seed();
  req.mutable_snapshot()->mutable_routes(0)->set_cluster("nope");
  auto r = manager_->Apply(req, "ops");
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("snapshot.routes[0].cluster: unknown cluster"),
            std::string::npos)
      << r.status();
  EXPECT_EQ(store_->latest_version(), 1u);
}

TEST_F(ConfigManagerTest, ExpectedVersionConflict) {
  v1::ApplyRequest req;
  *req.mutable_snapshot() = Seed();
  req.mutable_options()->set_expected_version(7);
  EXPECT_EQ(manager_->Apply(req, "ops").status().code(), absl::StatusCode::kFailedPrecondition);
  req.mutable_options()->set_expected_version(1);
  EXPECT_TRUE(manager_->Apply(req, "ops").ok());
}

TEST_F(ConfigManagerTest, SetUpstreamErrors) {
  v1::SetUpstreamRequest req;
  req.set_cluster("missing");
  req.add_endpoints()->set_host("h");
  req.mutable_endpoints(0)->set_port(1);
  EXPECT_EQ(manager_->SetUpstream(req, "ops").status().code(), absl::StatusCode::kNotFound);
  req.set_cluster("agents");
  req.mutable_endpoints(0)->set_port(0);
  auto r = manager_->SetUpstream(req, "ops");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("endpoints[0].port"), std::string::npos);
  req.clear_endpoints();
  EXPECT_EQ(manager_->SetUpstream(req, "ops").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ConfigManagerTest, CookiePolicyValidatedAgainstSiteDomain) {
  v1::SetCookiePolicyRequest req;
  auto* rw = req.mutable_cookie_policy()->add_domain_rewrites();
  rw->set_from("agents-service");
  rw->set_to("evil.com");
  auto r = manager_->SetCookiePolicy(req, "ops");
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("cookie_policy.domain_rewrites[0].to"),
            std::string::npos);
  rw->set_to(".hirecj.ai");
  EXPECT_TRUE(manager_->SetCookiePolicy(req, "ops").ok());
}

TEST_F(ConfigManagerTest, RollbackCommitsOldContentAsNewVersion) {
  v1::SetUpstreamRequest req;
  req.set_cluster("agents");
  req.add_endpoints()->set_host("10.0.0.1");
  req.mutable_endpoints(0)->set_port(1);
  ASSERT_TRUE(manager_->SetUpstream(req, "ops").ok());
  v1::RollbackRequest rb;
  rb.set_version(1);
  auto r = manager_->Rollback(rb, "ops");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->version(), 3u);
  EXPECT_EQ(store_->Latest()->clusters(0).endpoints(0).host(), "127.0.0.1");
  rb.set_version(99);
  EXPECT_EQ(manager_->Rollback(rb, "ops").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ConfigManagerTest, RestartLoadsLatest) {
  v1::SetUpstreamRequest req;
  req.set_cluster("agents");
  req.add_endpoints()->set_host("127.0.0.1");
  req.mutable_endpoints(0)->set_port(8002);
  ASSERT_TRUE(manager_->SetUpstream(req, "ops").ok());
  auto store = std::move(*FileStore::Open(dir_, 10));
  Fleet fleet;
  ConfigManager again(*store, fleet);
  const v1::Snapshot seed = Seed();
  ASSERT_TRUE(again.Start(&seed).ok());
  EXPECT_EQ(store->latest_version(), 2u);  // the seed is ignored once the store has versions
}

}  // namespace
}  // namespace onedomain::controlplane
