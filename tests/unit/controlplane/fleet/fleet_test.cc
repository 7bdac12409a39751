#include "controlplane/fleet/fleet.h"

#include <gtest/gtest.h>

#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

// Records what the fleet offers; "sends" only when the test says the write finished.
class FakeConnection : public NodeConnection {
 public:
  void Offer(std::shared_ptr<const v1::ControlMessage> push) override {
    offers.push_back(push);
  }
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
  fleet.Attach(&c, Hello("a"));
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
  fleet.Attach(&c, Hello("a", 3));
  EXPECT_TRUE(c.PushedVersions().empty());
  EXPECT_EQ(fleet.LastKnownGood(), 3u);
}

TEST(Fleet, PublishReachesEveryConnectedNode) {
  Fleet fleet;
  FakeConnection a, b;
  fleet.Attach(&a, Hello("a"));
  fleet.Attach(&b, Hello("b"));
  fleet.Publish(Snap(1));
  EXPECT_EQ(a.PushedVersions(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(b.PushedVersions(), (std::vector<uint64_t>{1}));
}

TEST(Fleet, NackedVersionIsNeverPushedAgain) {
  Fleet fleet;
  FakeConnection a;
  fleet.Attach(&a, Hello("a"));
  fleet.Publish(Snap(1));
  v1::Nack nack;
  nack.set_version(1);
  nack.set_error("listeners[0].tls.cert_file: cannot open");
  fleet.OnNack(&a, nack);
  fleet.Detach(&a);
  FakeConnection again;
  fleet.Attach(&again, Hello("a"));  // reconnect: version 1 is still refused
  EXPECT_TRUE(again.PushedVersions().empty());
  auto list = fleet.List();
  ASSERT_EQ(list.nodes_size(), 1);
  EXPECT_EQ(list.nodes(0).version_nacked(), 1u);
  EXPECT_EQ(list.nodes(0).nack_error(), "listeners[0].tls.cert_file: cannot open");
  fleet.Publish(Snap(2));  // a newer version is offered
  EXPECT_EQ(again.PushedVersions(), (std::vector<uint64_t>{2}));
  fleet.OnAck(&again, Ack(2));
  EXPECT_EQ(fleet.List().nodes(0).version_nacked(), 0u);
}

TEST(Fleet, LastKnownGoodIsMinimumAckedOverConnectedNodes) {
  Fleet fleet;
  FakeConnection a, b;
  fleet.Attach(&a, Hello("a"));
  fleet.Attach(&b, Hello("b"));
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
  fleet.Attach(&a, Hello("a"));
  fleet.Attach(&b, Hello("b"));
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
  fleet.Attach(&first, Hello("a"));
  fleet.Attach(&second, Hello("a"));
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
  fleet.Attach(&a, Hello("a"));
  fleet.Detach(&a);
  EXPECT_EQ(fleet.List().nodes_size(), 1);
  EXPECT_FALSE(fleet.List().nodes(0).connected());
  now += std::chrono::seconds(61);
  fleet.Attach(&b, Hello("b"));
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

}  // namespace
}  // namespace onedomain::controlplane
