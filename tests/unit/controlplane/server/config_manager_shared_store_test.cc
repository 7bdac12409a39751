// ConfigManager over a shared store (the etcd case) with a fake Store at the seam: another
// replica committing between this replica's read and its commit (ABORTED), the store being
// unreachable (UNAVAILABLE), versions arriving from another replica's commit (watch).

#include <gtest/gtest.h>

#include <map>

#include "controlplane/fleet/fleet.h"
#include "controlplane/server/config_manager.h"
#include "controlplane/store/store.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

v1::Snapshot Snap(uint32_t port) {
  v1::Snapshot s;
  s.add_listeners()->set_name("main");
  auto* c = s.add_clusters();
  c->set_name("agents");
  auto* e = c->add_endpoints();
  e->set_host("127.0.0.1");
  e->set_port(port);
  auto* r = s.add_routes();
  r->set_name("api");
  r->mutable_match()->set_prefix("/");
  r->set_cluster("agents");
  return s;
}

// What etcd holds, shared by the "replicas" of a test; this fake is one replica's view.
struct Remote {
  std::map<uint64_t, v1::Snapshot> versions;
  std::map<uint64_t, v1::AuditRecord> audit;
  uint64_t latest() const { return versions.empty() ? 0 : versions.rbegin()->first; }
};

class FakeSharedStore final : public Store {
 public:
  explicit FakeSharedStore(Remote& remote) : remote_(remote) {}
  std::string Describe() const override { return "fake shared store"; }
  std::shared_ptr<const v1::Snapshot> Latest() const override { return cached_; }
  absl::Status Refresh() override {
    if (unreachable) return absl::UnavailableError("fake etcd unreachable");
    ++refreshes;
    if (remote_.latest() != 0 && (!cached_ || cached_->version() != remote_.latest())) {
      cached_ = std::make_shared<const v1::Snapshot>(remote_.versions.at(remote_.latest()));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<v1::Snapshot> Get(uint64_t version) const override {
    auto it = remote_.versions.find(version);
    if (it == remote_.versions.end()) return absl::NotFoundError("no such version");
    return it->second;
  }
  uint64_t next_version() const override { return (cached_ ? cached_->version() : 0) + 1; }
  absl::Status Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record) override {
    if (unreachable) return absl::UnavailableError("fake etcd unreachable");
    if (steal_next > 0) {  // another replica commits first: the compare on `version` fails
      --steal_next;
      v1::Snapshot theirs = Snap(static_cast<uint32_t>(9000 + remote_.latest()));
      theirs.set_version(remote_.latest() + 1);
      remote_.versions[theirs.version()] = theirs;
      return absl::AbortedError("lost the race");
    }
    if (snapshot.version() != remote_.latest() + 1) return absl::AbortedError("stale");
    remote_.versions[snapshot.version()] = snapshot;
    remote_.audit[snapshot.version()] = record;
    cached_ = std::make_shared<const v1::Snapshot>(snapshot);
    return absl::OkStatus();
  }
  absl::Status RaiseFloor(uint64_t, std::string_view) override { return absl::OkStatus(); }
  absl::StatusOr<std::vector<v1::AuditRecord>> ReadHistory(uint32_t) const override {
    std::vector<v1::AuditRecord> out;
    for (auto it = remote_.audit.rbegin(); it != remote_.audit.rend(); ++it) {
      out.push_back(it->second);
    }
    return out;
  }
  std::string Staleness() const override { return unreachable ? "fake etcd away for 3s" : ""; }

  bool unreachable = false;
  int steal_next = 0;
  int refreshes = 0;

 private:
  Remote& remote_;
  std::shared_ptr<const v1::Snapshot> cached_;
};

class SharedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_unique<FakeSharedStore>(remote_);
    manager_ = std::make_unique<ConfigManager>(*store_, fleet_,
                                               [this](uint64_t v) { published_.push_back(v); });
    const v1::Snapshot seed = Snap(8000);
    ASSERT_TRUE(manager_->Start(&seed).ok());
  }
  v1::SetUpstreamRequest Upstream(uint32_t port, uint64_t expected = 0) {
    v1::SetUpstreamRequest req;
    req.set_cluster("agents");
    auto* e = req.add_endpoints();
    e->set_host("127.0.0.1");
    e->set_port(port);
    req.mutable_options()->set_expected_version(expected);
    return req;
  }

  Remote remote_;
  Fleet fleet_;
  std::unique_ptr<FakeSharedStore> store_;
  std::unique_ptr<ConfigManager> manager_;
  std::vector<uint64_t> published_;
};

TEST_F(SharedStoreTest, LostRaceIsRecomputedOnTheWinnersVersion) {
  store_->steal_next = 2;
  auto r = manager_->SetUpstream(Upstream(8100), "ops");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version(), 4u);  // 2 and 3 went to "another replica"
  // The change was rebuilt on the winner's content: its diff starts from 9002.
  ASSERT_EQ(r->diff_size(), 1);
  EXPECT_NE(r->diff(0).find("127.0.0.1:9002 -> 127.0.0.1:8100"), std::string::npos) << r->diff(0);
  EXPECT_EQ(remote_.versions.size(), 4u);
}

TEST_F(SharedStoreTest, LostRaceWithExpectedVersionIsAConflict) {
  store_->steal_next = 1;
  auto r = manager_->SetUpstream(Upstream(8100, /*expected=*/1), "ops");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);  // CLI exit 5
  EXPECT_NE(r.status().message().find("expected_version"), std::string::npos);
  EXPECT_EQ(remote_.latest(), 2u);  // only the other replica's commit
}

TEST_F(SharedStoreTest, ExpectedVersionIsCheckedAgainstAFreshRead) {
  // Another replica committed version 2; this one has not heard yet (no watch event).
  v1::Snapshot theirs = Snap(8500);
  theirs.set_version(2);
  remote_.versions[2] = theirs;
  auto r = manager_->SetUpstream(Upstream(8100, /*expected=*/2), "ops");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version(), 3u);
}

TEST_F(SharedStoreTest, GivesUpAfterBoundedRounds) {
  store_->steal_next = 100;
  const int before = store_->refreshes;
  auto r = manager_->SetUpstream(Upstream(8100), "ops");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(store_->refreshes - before, 5);  // one fresh read per round, 5 rounds
}

TEST_F(SharedStoreTest, UnreachableStoreRefusesWritesAndMarksReadsStale) {
  store_->unreachable = true;
  auto r = manager_->SetUpstream(Upstream(8100), "ops");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);  // CLI exit 6
  EXPECT_NE(r.status().message().find("nothing committed"), std::string::npos);
  auto got = manager_->Get(v1::GetConfigRequest());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->snapshot().version(), 1u);
  EXPECT_EQ(got->stale(), "fake etcd away for 3s");
  store_->unreachable = false;
  EXPECT_TRUE(manager_->SetUpstream(Upstream(8100), "ops").ok());
  EXPECT_EQ(manager_->Get(v1::GetConfigRequest())->stale(), "");
}

TEST_F(SharedStoreTest, WatchedVersionsArePublishedForwardOnly) {
  auto v3 = std::make_shared<v1::Snapshot>(Snap(8300));
  v3->set_version(3);
  auto v2 = std::make_shared<v1::Snapshot>(Snap(8200));
  v2->set_version(2);
  manager_->OnStoreChange(v3);
  manager_->OnStoreChange(v2);  // late event of an older commit: never pushed
  manager_->OnStoreChange(v3);  // the same again: no second push
  EXPECT_EQ(published_, (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(fleet_.List().latest_version(), 3u);
}

TEST_F(SharedStoreTest, SeedRaceServesTheWinnersVersionOne) {
  Remote remote;
  FakeSharedStore a(remote);
  FakeSharedStore b(remote);
  Fleet fleet_a;
  Fleet fleet_b;
  ConfigManager ma(a, fleet_a);
  ConfigManager mb(b, fleet_b);
  const v1::Snapshot seed_a = Snap(8001);
  const v1::Snapshot seed_b = Snap(8002);
  ASSERT_TRUE(ma.Start(&seed_a).ok());
  ASSERT_TRUE(mb.Start(&seed_b).ok());  // finds version 1 there: serves it, seeds nothing
  EXPECT_EQ(remote.versions.size(), 1u);
  EXPECT_EQ(b.Latest()->clusters(0).endpoints(0).port(), 8001u);
}

}  // namespace
}  // namespace onedomain::controlplane
