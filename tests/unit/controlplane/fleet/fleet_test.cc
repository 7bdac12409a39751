#include "controlplane/fleet/fleet.h"

#include <gtest/gtest.h>

#include "common/config/snapshot_hash.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

// Records what the fleet offers; "sends" only when the test says the write finished.
class FakeConnection : public NodeConnection {
 public:
  void Offer(std::shared_ptr<const v1::ControlMessage> push) override { offers.push_back(push); }
  void Close(int code, std::string message) override {
    closed_code = code;
    closed_message = std::move(message);
  }
  // Versions of the pushes offered (welcomes left out).
  std::vector<uint64_t> PushedVersions() const {
    std::vector<uint64_t> out;
    for (const auto& o : offers) {
      if (o->has_push()) out.push_back(o->push().snapshot().version());
    }
    return out;
  }

  std::vector<std::shared_ptr<const v1::ControlMessage>> offers;
  int closed_code = 0;
  std::string closed_message;
};

std::shared_ptr<const v1::Snapshot> Snap(uint64_t v) {
  auto s = std::make_shared<v1::Snapshot>();
  s->set_version(v);
  return s;
}

v1::Hello Hello(const std::string& id, uint64_t serving = 0) {
  v1::Hello h;
  h.set_node_id(id);
  h.set_serving_version(serving);
  return h;
}

v1::Ack Ack(uint64_t v) {
  v1::Ack a;
  a.set_version(v);
  a.set_nonce("v" + std::to_string(v));
  return a;
}

TEST(Fleet, WelcomeThenLatestOnAttach) {
  Fleet fleet;
  fleet.Publish(Snap(1));
  fleet.Publish(Snap(2));
  FakeConnection c;
  EXPECT_TRUE(fleet.Attach(&c, Hello("a")).ok());
  ASSERT_EQ(c.offers.size(), 2u);
  EXPECT_TRUE(c.offers[0]->has_welcome());
  EXPECT_EQ(c.offers[0]->welcome().latest_version(), 2u);
  EXPECT_EQ(c.PushedVersions(), (std::vector<uint64_t>{2}));  // latest only, never a queue
  EXPECT_EQ(c.offers[1]->push().nonce(), "v2");
}

TEST(Fleet, NoPushWhenNodeAlreadyServesLatest) {
  Fleet fleet;
  fleet.Publish(Snap(3));
  FakeConnection c;
  EXPECT_TRUE(fleet.Attach(&c, Hello("a", 3)).ok());
  EXPECT_TRUE(c.PushedVersions().empty());
  EXPECT_EQ(fleet.LastKnownGood(), 3u);
}

TEST(Fleet, PublishReachesEveryConnectedNode) {
  Fleet fleet;
  FakeConnection a, b;
  EXPECT_TRUE(fleet.Attach(&a, Hello("a")).ok());
  EXPECT_TRUE(fleet.Attach(&b, Hello("b")).ok());
  fleet.Publish(Snap(1));
  EXPECT_EQ(a.PushedVersions(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(b.PushedVersions(), (std::vector<uint64_t>{1}));
}

TEST(Fleet, NackedVersionIsNotPushedAgainOnTheSameStream) {
  Fleet fleet;
  FakeConnection a;
  EXPECT_TRUE(fleet.Attach(&a, Hello("a")).ok());
  fleet.Publish(Snap(1));
  v1::Nack nack;
  nack.set_version(1);
  nack.set_error("listeners[0].tls.cert_file: cannot open");
  fleet.OnNack(&a, nack);
  fleet.Publish(Snap(1));  // e.g. republished: not offered again on this stream
  EXPECT_EQ(a.PushedVersions(), (std::vector<uint64_t>{1}));
  fleet.Detach(&a);
  FakeConnection again;
  // A new stream starts clean (see ReconnectClearsNackState): version 1 gets one more try,
  // and a node that still cannot apply it refuses it again.
  EXPECT_TRUE(fleet.Attach(&again, Hello("a")).ok());
  EXPECT_EQ(again.PushedVersions(), (std::vector<uint64_t>{1}));
  fleet.OnNack(&again, nack);
  auto list = fleet.List();
  ASSERT_EQ(list.nodes_size(), 1);
  EXPECT_EQ(list.nodes(0).version_nacked(), 1u);
  EXPECT_EQ(list.nodes(0).nack_error(), "listeners[0].tls.cert_file: cannot open");
  fleet.Publish(Snap(2));  // a newer version is offered
  EXPECT_EQ(again.PushedVersions(), (std::vector<uint64_t>{1, 2}));
  fleet.OnAck(&again, Ack(2));
  EXPECT_EQ(fleet.List().nodes(0).version_nacked(), 0u);
}

TEST(Fleet, LastKnownGoodIsMinimumAckedOverConnectedNodes) {
  Fleet fleet;
  FakeConnection a, b;
  EXPECT_TRUE(fleet.Attach(&a, Hello("a")).ok());
  EXPECT_TRUE(fleet.Attach(&b, Hello("b")).ok());
  EXPECT_EQ(fleet.LastKnownGood(), 0u);
  fleet.Publish(Snap(1));
  fleet.OnAck(&a, Ack(1));
  EXPECT_EQ(fleet.LastKnownGood(), 0u);
  fleet.OnAck(&b, Ack(1));
  EXPECT_EQ(fleet.LastKnownGood(), 1u);
  fleet.Publish(Snap(2));
  fleet.OnAck(&a, Ack(2));
  EXPECT_EQ(fleet.LastKnownGood(), 1u);
  fleet.Detach(&b);
  EXPECT_EQ(fleet.LastKnownGood(), 2u);
}

TEST(Fleet, PushObserverFiresWhenAllAnswered) {
  auto now = std::chrono::steady_clock::time_point{};
  Fleet fleet(std::chrono::seconds(300), [&now] { return now; });
  std::vector<double> observed;
  fleet.SetPushObserver([&](double s) { observed.push_back(s); });
  FakeConnection a, b;
  EXPECT_TRUE(fleet.Attach(&a, Hello("a")).ok());
  EXPECT_TRUE(fleet.Attach(&b, Hello("b")).ok());
  fleet.Publish(Snap(1));
  now += std::chrono::milliseconds(30);
  fleet.OnAck(&a, Ack(1));
  EXPECT_TRUE(observed.empty());
  now += std::chrono::milliseconds(20);
  v1::Nack nack;
  nack.set_version(1);
  fleet.OnNack(&b, nack);  // a refusal is an answer too
  ASSERT_EQ(observed.size(), 1u);
  EXPECT_NEAR(observed[0], 0.05, 1e-9);
}

TEST(Fleet, SecondStreamOfSameNodeReplacesFirst) {
  Fleet fleet;
  FakeConnection first, second;
  EXPECT_TRUE(fleet.Attach(&first, Hello("a")).ok());
  EXPECT_TRUE(fleet.Attach(&second, Hello("a")).ok());
  EXPECT_EQ(first.closed_code, 10);  // ABORTED
  fleet.Detach(&first);              // the old stream ending must not mark the node gone
  auto list = fleet.List();
  ASSERT_EQ(list.nodes_size(), 1);
  EXPECT_TRUE(list.nodes(0).connected());
}

TEST(Fleet, DisconnectedNodesAreForgottenAfterGrace) {
  auto now = std::chrono::steady_clock::time_point{};
  Fleet fleet(std::chrono::seconds(60), [&now] { return now; });
  FakeConnection a, b;
  EXPECT_TRUE(fleet.Attach(&a, Hello("a")).ok());
  fleet.Detach(&a);
  EXPECT_EQ(fleet.List().nodes_size(), 1);
  EXPECT_FALSE(fleet.List().nodes(0).connected());
  now += std::chrono::seconds(61);
  EXPECT_TRUE(fleet.Attach(&b, Hello("b")).ok());
  auto list = fleet.List();
  ASSERT_EQ(list.nodes_size(), 1);
  EXPECT_EQ(list.nodes(0).node_id(), "b");
}

TEST(Fleet, MessagesFromUnknownConnectionsAreIgnored) {
  Fleet fleet;
  FakeConnection stranger;
  fleet.OnAck(&stranger, Ack(5));
  fleet.Detach(&stranger);
  EXPECT_EQ(fleet.List().nodes_size(), 0);
}

// An impostor's NACK (or a real one from an earlier stream) does not outlive a reconnect:
// the new stream starts clean and is offered the refused version again.
TEST(Fleet, ReconnectClearsNackState) {
  Fleet fleet;
  fleet.Publish(Snap(1));
  fleet.Publish(Snap(2));
  FakeConnection impostor, real;
  EXPECT_TRUE(fleet.Attach(&impostor, Hello("a", 1)).ok());
  v1::Nack nack;
  nack.set_version(2);
  nack.set_error("forged\nline");
  fleet.OnNack(&impostor, nack);
  EXPECT_EQ(fleet.List().nodes(0).version_nacked(), 2u);
  EXPECT_TRUE(fleet.Attach(&real, Hello("a", 1)).ok());
  const auto list = fleet.List();
  EXPECT_EQ(list.nodes(0).version_nacked(), 0u);
  EXPECT_EQ(list.nodes(0).nack_error(), "");
  EXPECT_EQ(real.PushedVersions(), (std::vector<uint64_t>{2}));
}

TEST(Fleet, NodeCountIsBoundedAndDisconnectedNodesMakeRoom) {
  auto now = std::chrono::steady_clock::time_point{};
  Fleet fleet(
      std::chrono::seconds(300), [&now] { return now; }, /*max_nodes=*/2);
  FakeConnection a, b, c, d;
  EXPECT_TRUE(fleet.Attach(&a, Hello("a")).ok());
  EXPECT_TRUE(fleet.Attach(&b, Hello("b")).ok());
  const absl::Status full = fleet.Attach(&c, Hello("c"));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("hello.node_id"), absl::string_view::npos);
  EXPECT_EQ(fleet.List().nodes_size(), 2);
  // A known id reconnecting is never refused.
  EXPECT_TRUE(fleet.Attach(&d, Hello("a")).ok());
  fleet.Detach(&b);
  now += std::chrono::seconds(1);
  EXPECT_TRUE(fleet.Attach(&c, Hello("c")).ok());  // b, disconnected, is forgotten for it
  std::vector<std::string> ids;
  const auto list = fleet.List();
  for (const auto& n : list.nodes()) ids.push_back(n.node_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "c"}));
}

TEST(Fleet, ExpiredNodesLeaveListAndMetricsWithoutNewAttach) {
  auto now = std::chrono::steady_clock::time_point{};
  Fleet fleet(std::chrono::seconds(60), [&now] { return now; });
  FakeConnection a;
  EXPECT_TRUE(fleet.Attach(&a, Hello("a")).ok());
  fleet.Detach(&a);
  EXPECT_EQ(fleet.Nodes().size(), 1u);
  now += std::chrono::seconds(61);
  EXPECT_EQ(fleet.Nodes().size(), 0u);
  EXPECT_EQ(fleet.List().nodes_size(), 0);
}

v1::Hello HelloWithHash(const std::string& id, uint64_t serving, const std::string& hash) {
  v1::Hello h = Hello(id, serving);
  h.set_content_hash(hash);
  return h;
}

TEST(Fleet, HelloWithOtherContentForLatestVersionIsPushedAgain) {
  Fleet fleet;
  auto latest = Snap(3);
  fleet.Publish(latest);
  FakeConnection same, other;
  EXPECT_TRUE(fleet.Attach(&same, HelloWithHash("same", 3, config::SnapshotHash(*latest))).ok());
  EXPECT_TRUE(same.PushedVersions().empty());
  EXPECT_TRUE(fleet.Attach(&other, HelloWithHash("other", 3, std::string(64, 'a'))).ok());
  EXPECT_EQ(other.PushedVersions(), (std::vector<uint64_t>{3}));
  auto list = fleet.List();
  EXPECT_EQ(list.nodes(0).node_id(), "other");
  EXPECT_NE(list.nodes(0).divergence(), "");
  EXPECT_EQ(list.nodes(0).version_acked(), 0u);  // it does not serve our version 3
  // Its Ack with the right hash ends the divergence.
  v1::Ack ack = Ack(3);
  ack.set_content_hash(config::SnapshotHash(*latest));
  fleet.OnAck(&other, ack);
  EXPECT_EQ(fleet.List().nodes(0).divergence(), "");
  EXPECT_EQ(fleet.List().nodes(0).version_acked(), 3u);
}

TEST(Fleet, AckWithOtherHashIsPushedAgainOncePerStream) {
  Fleet fleet;
  fleet.Publish(Snap(2));
  FakeConnection c;
  EXPECT_TRUE(fleet.Attach(&c, Hello("a")).ok());
  EXPECT_EQ(c.PushedVersions(), (std::vector<uint64_t>{2}));
  v1::Ack ack = Ack(2);
  ack.set_content_hash(std::string(64, 'b'));
  fleet.OnAck(&c, ack);
  EXPECT_EQ(c.PushedVersions(), (std::vector<uint64_t>{2, 2}));
  fleet.OnAck(&c, ack);  // the same again: no loop
  EXPECT_EQ(c.PushedVersions(), (std::vector<uint64_t>{2, 2}));
  EXPECT_NE(fleet.List().nodes(0).divergence(), "");
}

TEST(Fleet, NodeAheadOfTheStoreIsReported) {
  Fleet fleet;
  std::vector<std::pair<std::string, uint64_t>> ahead;
  fleet.SetAheadObserver([&](const std::string& id, uint64_t v) { ahead.emplace_back(id, v); });
  fleet.Publish(Snap(5));
  FakeConnection c;
  EXPECT_TRUE(fleet.Attach(&c, Hello("a", 9)).ok());
  ASSERT_EQ(ahead.size(), 1u);
  EXPECT_EQ(ahead[0], (std::pair<std::string, uint64_t>{"a", 9}));
  EXPECT_EQ(c.PushedVersions(), (std::vector<uint64_t>{5}));  // the store's content wins
}

}  // namespace
}  // namespace onedomain::controlplane
