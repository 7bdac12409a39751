#include "controlplane/rollout/rollout_controller.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>

#include "controlplane/fleet/fleet.h"
#include "controlplane/server/config_manager.h"
#include "controlplane/server/serial_executor.h"
#include "controlplane/store/file_store.h"
#include "google/protobuf/util/time_util.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

using google::protobuf::util::TimeUtil;

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

class Conn : public NodeConnection {
 public:
  void Offer(std::shared_ptr<const v1::ControlMessage> m) override {
    if (m->has_push()) versions.push_back(m->push().snapshot().version());
  }
  void Close(int, std::string) override {}
  uint64_t last() const { return versions.empty() ? 0 : versions.back(); }
  std::vector<uint64_t> versions;
};

// One control plane (file store, fleet, manager, controller) over a directory; the test
// thread plays the admin executor (nothing else posts: the ticker is not started).
struct Plane {
  explicit Plane(const std::string& dir) {
    store = std::move(*FileStore::Open(dir, 10));
    v1::RolloutPolicy policy;
    policy.set_default_mode(v1::ROLLOUT_MODE_ROLLOUT);
    policy.add_waves("1");
    policy.add_waves("100%");
    *policy.mutable_bake() = TimeUtil::SecondsToDuration(600);
    policy.set_min_requests(10);
    rollouts = std::make_unique<RolloutController>(*store, fleet, executor, registry, policy);
    manager = std::make_unique<ConfigManager>(*store, fleet);
    manager->SetRollouts(rollouts.get());
    rollouts->SetManager(manager.get());
  }
  absl::Status Start() {
    const v1::Snapshot seed = Seed();
    return manager->Start(&seed);
  }
  void Connect(std::map<std::string, Conn>& conns, uint64_t serving) {
    for (auto& [id, conn] : conns) {
      v1::Hello h;
      h.set_node_id(id);
      h.set_serving_version(serving);
      ASSERT_TRUE(fleet.Attach(&conn, h).ok());
    }
  }
  absl::StatusOr<v1::ChangeResponse> SetPort(uint32_t port, v1::RolloutMode mode) {
    v1::SetUpstreamRequest req;
    req.set_cluster("agents");
    auto* e = req.add_endpoints();
    e->set_host("127.0.0.1");
    e->set_port(port);
    req.mutable_options()->set_mode(mode);
    if (absl::Status s = rollouts->Admit(req.options(), true); !s.ok()) return s;
    return manager->SetUpstream(req, "tester");
  }

  prometheus::Registry registry;
  Fleet fleet;
  SerialExecutor executor;
  std::unique_ptr<FileStore> store;
  std::unique_ptr<RolloutController> rollouts;
  std::unique_ptr<ConfigManager> manager;
};

v1::MetricsReport Report(uint64_t version, uint64_t ok, uint64_t errors) {
  v1::MetricsReport r;
  r.mutable_start_time()->set_seconds(1000);
  r.set_config_version(version);
  if (ok) (*r.mutable_http_requests())["api|2xx"] = ok;
  if (errors) (*r.mutable_http_requests())["api|5xx"] = errors;
  return r;
}

class RolloutControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/od-rollout-XXXXXX";
    dir_ = mkdtemp(tmpl);
    plane_ = std::make_unique<Plane>(dir_);
    ASSERT_TRUE(plane_->Start().ok());
    plane_->Connect(conns_, 1);
  }
  void TearDown() override {
    plane_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string Canary() {
    const v1::RolloutStatus st = plane_->rollouts->Status();
    EXPECT_EQ(st.canary_nodes_size(), 1);
    return st.canary_nodes_size() > 0 ? st.canary_nodes(0) : std::string();
  }

  std::string dir_;
  std::map<std::string, Conn> conns_{{"n1", {}}, {"n2", {}}, {"n3", {}}};
  std::unique_ptr<Plane> plane_;
};

TEST_F(RolloutControllerTest, WaveOneGoesToOneNodeAndASecondChangeIsRefused) {
  auto r = plane_->SetPort(8001, v1::ROLLOUT_MODE_UNSPECIFIED);  // the default: a rollout
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version(), 2u);
  const std::string canary = Canary();
  for (auto& [id, conn] : conns_) EXPECT_EQ(conn.last(), id == canary ? 2u : 0u) << id;
  auto second = plane_->SetPort(8002, v1::ROLLOUT_MODE_ROLLOUT);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("options.supersede"), std::string::npos);
}

TEST_F(RolloutControllerTest, NackRollsBackAtOnceAndHistorySaysSo) {
  ASSERT_TRUE(plane_->SetPort(8001, v1::ROLLOUT_MODE_ROLLOUT).ok());
  const std::string canary = Canary();
  v1::Nack nack;
  nack.set_version(2);
  nack.set_error("listeners[0]: cannot bind");
  plane_->fleet.OnNack(&conns_[canary], nack);
  plane_->rollouts->Tick();
  const v1::RolloutStatus st = plane_->rollouts->Status();
  EXPECT_EQ(st.state(), v1::ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_EQ(st.revert_version(), 3u);
  EXPECT_NE(st.detail().find("nack: node " + canary), std::string::npos) << st.detail();
  for (auto& [id, conn] : conns_) EXPECT_EQ(conn.last(), 3u) << id;
  auto h = plane_->manager->History(v1::HistoryRequest());
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->entries(0).version(), 3u);
  EXPECT_EQ(h->entries(0).method(), "RolloutRollback");
  EXPECT_EQ(h->entries(0).reverts_version(), 2u);
  EXPECT_EQ(h->entries(1).outcome(), "rolled_back");
  EXPECT_NE(h->entries(1).outcome_detail().find("cannot bind"), std::string::npos);
  EXPECT_EQ(h->entries(1).delivery(), "rollout");
}

TEST_F(RolloutControllerTest, FailingGateRollsBackWithItsNumbers) {
  ASSERT_TRUE(plane_->SetPort(8001, v1::ROLLOUT_MODE_ROLLOUT).ok());
  const std::string canary = Canary();
  // Windows start at each node's first report on its version...
  for (auto& [id, conn] : conns_) {
    plane_->fleet.OnReport(&conn, Report(id == canary ? 2 : 1, 100, 0));
  }
  plane_->rollouts->Tick();
  EXPECT_EQ(plane_->rollouts->Status().state(), v1::ROLLOUT_STATE_RUNNING);
  // ...then the canary fails 40 of 50 requests while the others fail none of 200.
  for (auto& [id, conn] : conns_) {
    plane_->fleet.OnReport(&conn, id == canary ? Report(2, 110, 40) : Report(1, 300, 0));
  }
  plane_->rollouts->Tick();
  const v1::RolloutStatus st = plane_->rollouts->Status();
  EXPECT_EQ(st.state(), v1::ROLLOUT_STATE_ROLLED_BACK) << st.detail();
  EXPECT_NE(st.detail().find("gate http_5xx: canary 80% over 50 requests"), std::string::npos)
      << st.detail();
  EXPECT_NE(st.detail().find("in wave 1"), std::string::npos) << st.detail();
}

TEST_F(RolloutControllerTest, SilenceIsNoVerdictAndPromoteAdvances) {
  ASSERT_TRUE(plane_->SetPort(8001, v1::ROLLOUT_MODE_ROLLOUT).ok());
  plane_->rollouts->Tick();
  EXPECT_EQ(plane_->rollouts->Status().wave(), 0u);
  v1::ControlRolloutRequest promote;
  promote.set_action(v1::ControlRolloutRequest::PROMOTE);
  ASSERT_TRUE(plane_->rollouts->Control(promote, "op").ok());
  EXPECT_EQ(plane_->rollouts->Status().wave(), 1u);  // the 100% wave
  for (auto& [id, conn] : conns_) EXPECT_EQ(conn.last(), 2u) << id;
  ASSERT_TRUE(plane_->rollouts->Control(promote, "op").ok());
  EXPECT_EQ(plane_->rollouts->Status().state(), v1::ROLLOUT_STATE_SUCCEEDED);
  EXPECT_EQ(plane_->rollouts->Control(promote, "op").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(RolloutControllerTest, RestartResumesTheSplit) {
  ASSERT_TRUE(plane_->SetPort(8001, v1::ROLLOUT_MODE_ROLLOUT).ok());
  const std::string canary = Canary();
  plane_.reset();  // the process dies; the directory stays
  plane_ = std::make_unique<Plane>(dir_);
  ASSERT_TRUE(plane_->Start().ok());
  const v1::RolloutStatus st = plane_->rollouts->Status();
  EXPECT_EQ(st.state(), v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(plane_->fleet.TargetVersion(canary), 2u);
  for (auto& [id, conn] : conns_) {
    if (id != canary) {
      EXPECT_EQ(plane_->fleet.TargetVersion(id), 1u) << id;
    }
  }
}

TEST_F(RolloutControllerTest, RestartAbortsARolloutWhoseChangeNeverCommitted) {
  v1::RolloutStatus saved;
  saved.set_state(v1::ROLLOUT_STATE_RUNNING);
  saved.set_version(2);  // saved before a commit that never happened
  saved.set_base_version(1);
  saved.add_waves()->set_spec("100%");
  ASSERT_TRUE(plane_->store->SaveRollout(saved).ok());
  plane_.reset();
  plane_ = std::make_unique<Plane>(dir_);
  ASSERT_TRUE(plane_->Start().ok());
  const v1::RolloutStatus st = plane_->rollouts->Status();
  EXPECT_EQ(st.state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_NE(st.detail().find("before the change was committed"), std::string::npos);
  EXPECT_EQ(plane_->fleet.TargetVersion("n1"), 1u);
}

TEST_F(RolloutControllerTest, RestartCommitsARevertThatWasNotCommitted) {
  ASSERT_TRUE(plane_->SetPort(8001, v1::ROLLOUT_MODE_NOW).ok());  // version 2 everywhere
  v1::RolloutStatus saved;
  saved.set_state(v1::ROLLOUT_STATE_ROLLED_BACK);
  saved.set_version(2);
  saved.set_base_version(1);
  saved.set_detail("gate http_5xx: ...");
  ASSERT_TRUE(plane_->store->SaveRollout(saved).ok());
  plane_.reset();
  plane_ = std::make_unique<Plane>(dir_);
  ASSERT_TRUE(plane_->Start().ok());
  EXPECT_EQ(plane_->store->latest_version(), 3u);
  EXPECT_EQ(plane_->rollouts->Status().revert_version(), 3u);
  auto h = plane_->manager->History(v1::HistoryRequest());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->entries(0).reverts_version(), 2u);
  EXPECT_EQ(h->entries(1).outcome(), "rolled_back");
  auto v3 = plane_->store->Get(3);
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->clusters(0).endpoints(0).port(), 8000u);  // the base content
}

}  // namespace
}  // namespace onedomain::controlplane
