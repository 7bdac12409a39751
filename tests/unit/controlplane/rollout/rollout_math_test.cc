#include "controlplane/rollout/rollout_math.h"

#include <gtest/gtest.h>

#include "controlplane/fleet/fleet.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane::rollout {
namespace {

v1::RolloutPolicy Defaults() { return WithDefaults(v1::RolloutPolicy()); }

Side MakeSide(double requests, double errors_5xx, double connect_failures, double ws_abnormal,
              uint32_t nodes) {
  Side s;
  s.sum = {requests, errors_5xx, connect_failures, ws_abnormal};
  s.nodes = nodes;
  return s;
}

const v1::GateValue& GateNamed(const Verdict& v, const std::string& name) {
  for (const auto& g : v.gates) {
    if (g.gate() == name) return g;
  }
  static v1::GateValue none;
  ADD_FAILURE() << "no gate " << name;
  return none;
}

TEST(RolloutPolicy, DefaultsAreTheIssues) {
  const v1::RolloutPolicy p = Defaults();
  ASSERT_EQ(p.waves_size(), 4);
  EXPECT_EQ(p.waves(0), "1");
  EXPECT_EQ(p.waves(1), "10%");
  EXPECT_EQ(p.waves(3), "100%");
  EXPECT_EQ(p.bake().seconds(), 30);
  EXPECT_EQ(p.min_requests(), 100u);
  EXPECT_DOUBLE_EQ(p.http_5xx_floor(), 0.01);
  EXPECT_DOUBLE_EQ(p.http_5xx_relative(), 2.0);
  EXPECT_EQ(p.default_mode(), v1::ROLLOUT_MODE_NOW);
}

TEST(RolloutPolicy, ChangeOverridesOnlyWhatItSets) {
  v1::RolloutPolicy change;
  change.add_waves("50%");
  change.add_waves("100%");
  change.set_http_5xx_floor(0);  // explicitly zero: still an override
  const v1::RolloutPolicy p = Merge(Defaults(), change);
  ASSERT_EQ(p.waves_size(), 2);
  EXPECT_EQ(p.waves(0), "50%");
  EXPECT_DOUBLE_EQ(p.http_5xx_floor(), 0);
  EXPECT_EQ(p.bake().seconds(), 30);           // kept
  EXPECT_DOUBLE_EQ(p.http_5xx_relative(), 2);  // kept
}

TEST(RolloutPolicy, ValidationNamesTheField) {
  v1::RolloutPolicy p;
  p.add_waves("10%");
  p.add_waves("5%");
  p.add_waves("100%");
  absl::Status s = Validate(p, "rollout");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rollout.waves[1]"), std::string::npos) << s.message();

  p.clear_waves();
  p.add_waves("1");
  p.add_waves("50%");
  s = Validate(p, "options.rollout_policy");
  EXPECT_NE(s.message().find("options.rollout_policy.waves[1]: the last wave must be \"100%\""),
            std::string::npos)
      << s.message();

  p.clear_waves();
  p.add_waves("abc");
  p.add_waves("100%");
  s = Validate(p, "rollout");
  EXPECT_NE(s.message().find("rollout.waves[0]"), std::string::npos) << s.message();

  v1::RolloutPolicy q;
  q.set_http_5xx_floor(1.5);
  s = Validate(q, "rollout");
  EXPECT_NE(s.message().find("rollout.http_5xx_floor"), std::string::npos) << s.message();

  EXPECT_TRUE(Validate(Defaults(), "rollout").ok());
}

TEST(RolloutWaves, SizesRoundUpAndCap) {
  EXPECT_EQ(WaveSize(*ParseWave("1"), 10), 1u);
  EXPECT_EQ(WaveSize(*ParseWave("10%"), 10), 1u);
  EXPECT_EQ(WaveSize(*ParseWave("10%"), 11), 2u);  // 1.1 rounds up
  EXPECT_EQ(WaveSize(*ParseWave("50%"), 10), 5u);
  EXPECT_EQ(WaveSize(*ParseWave("100%"), 10), 10u);
  EXPECT_EQ(WaveSize(*ParseWave("1%"), 3), 1u);  // at least one
  EXPECT_EQ(WaveSize(*ParseWave("5"), 3), 3u);   // capped
  EXPECT_EQ(WaveSize(*ParseWave("50%"), 0), 0u);
  EXPECT_FALSE(ParseWave("0").ok());
  EXPECT_FALSE(ParseWave("101%").ok());
  EXPECT_FALSE(ParseWave("%").ok());
}

TEST(RolloutWaves, PicksSpreadOverZonesAndKeepEarlierCanaries) {
  std::vector<Candidate> candidates;
  for (int i = 0; i < 6; ++i) candidates.push_back({"a" + std::to_string(i), "zone-a"});
  for (int i = 0; i < 2; ++i) candidates.push_back({"b" + std::to_string(i), "zone-b"});
  std::set<std::string> chosen;
  PickCanaries(candidates, 7, 1, chosen);
  ASSERT_EQ(chosen.size(), 1u);
  const std::string first = *chosen.begin();
  PickCanaries(candidates, 7, 2, chosen);
  ASSERT_EQ(chosen.size(), 2u);
  EXPECT_EQ(chosen.count(first), 1u);  // waves are cumulative
  // Two nodes: one per zone.
  int in_b = 0;
  for (const auto& id : chosen) in_b += id[0] == 'b';
  EXPECT_EQ(in_b, 1);
  PickCanaries(candidates, 7, 100, chosen);
  EXPECT_EQ(chosen.size(), candidates.size());  // no more than there are

  // Deterministic per version, and not always the same first node across versions.
  std::set<std::string> firsts;
  for (uint64_t v = 1; v <= 20; ++v) {
    std::set<std::string> a, b;
    PickCanaries(candidates, v, 1, a);
    PickCanaries(candidates, v, 1, b);
    EXPECT_EQ(a, b);
    firsts.insert(*a.begin());
  }
  EXPECT_GT(firsts.size(), 1u);
}

TEST(RolloutCounters, ReadsTheReportAndDetectsRestarts) {
  v1::MetricsReport r;
  (*r.mutable_http_requests())["api|2xx"] = 90;
  (*r.mutable_http_requests())["api|5xx"] = 10;
  (*r.mutable_http_requests())["frontend|4xx"] = 5;
  r.set_upstream_connect_failures(3);
  r.set_websocket_closes_abnormal(2);
  const Counters c = CountersOf(r);
  EXPECT_EQ(c.requests, 105);
  EXPECT_EQ(c.http_5xx, 10);
  EXPECT_EQ(c.connect_failures, 3);
  EXPECT_EQ(c.ws_abnormal, 2);
  const auto d = Delta(Counters{100, 5, 1, 0}, c);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->requests, 5);
  EXPECT_EQ(d->http_5xx, 5);
  EXPECT_FALSE(Delta(Counters{200, 0, 0, 0}, c).has_value());  // went down: a restart
}

TEST(RolloutJudge, NoVerdictOnSilence) {
  RememberedBaseline remembered;
  // Every canary request failed, but there were only 50 of 100 required.
  const Verdict v = Judge(MakeSide(50, 50, 0, 0, 1), MakeSide(5000, 0, 0, 0, 9), 0.5, 0.5,
                          Defaults(), remembered);
  EXPECT_FALSE(v.failed);
  EXPECT_TRUE(v.waiting);
  EXPECT_EQ(GateNamed(v, "http_5xx").verdict(), "waiting");
}

TEST(RolloutJudge, FailsAboveFloorAndRelative) {
  RememberedBaseline remembered;
  // Canary 5% vs baseline 1%: above the 1% floor and above 2x baseline.
  const Verdict v = Judge(MakeSide(1000, 50, 0, 0, 1), MakeSide(9000, 90, 0, 0, 9), 0.5, 0.5,
                          Defaults(), remembered);
  EXPECT_TRUE(v.failed);
  EXPECT_EQ(GateNamed(v, "http_5xx").verdict(), "failing");
  EXPECT_NEAR(GateNamed(v, "http_5xx").canary(), 0.05, 1e-9);
  EXPECT_NEAR(GateNamed(v, "http_5xx").baseline(), 0.01, 1e-9);
  EXPECT_NE(v.failure.find("http_5xx"), std::string::npos) << v.failure;
  EXPECT_NE(v.failure.find("5%"), std::string::npos) << v.failure;
}

TEST(RolloutJudge, RelativeThresholdForgivesAFleetWideProblem) {
  RememberedBaseline remembered;
  // 5% on the canary, but 4% on the baseline too: the backend is bad for everyone.
  const Verdict v = Judge(MakeSide(1000, 50, 0, 0, 1), MakeSide(9000, 360, 0, 0, 9), 0.5, 0.5,
                          Defaults(), remembered);
  EXPECT_FALSE(v.failed);
  EXPECT_EQ(GateNamed(v, "http_5xx").verdict(), "ok");
}

TEST(RolloutJudge, FloorForgivesSmallRatios) {
  RememberedBaseline remembered;
  // 0.5% vs a perfect baseline: far above 2x, but under the 1% floor.
  const Verdict v = Judge(MakeSide(1000, 5, 0, 0, 1), MakeSide(9000, 0, 0, 0, 9), 0.5, 0.5,
                          Defaults(), remembered);
  EXPECT_FALSE(v.failed);
}

TEST(RolloutJudge, ConnectFailureGate) {
  RememberedBaseline remembered;
  const Verdict v = Judge(MakeSide(1000, 0, 200, 0, 1), MakeSide(9000, 0, 0, 0, 9), 0.5, 0.5,
                          Defaults(), remembered);
  EXPECT_TRUE(v.failed);
  EXPECT_EQ(GateNamed(v, "connect_failure").verdict(), "failing");
  EXPECT_EQ(GateNamed(v, "http_5xx").verdict(), "ok");
}

TEST(RolloutJudge, UntrustedBaselineUsesTheRememberedOneThenTheFloor) {
  RememberedBaseline remembered;
  // Wave 1: a trusted baseline of 3% is remembered.
  Verdict v = Judge(MakeSide(1000, 30, 0, 0, 1), MakeSide(9000, 270, 0, 0, 9), 0.5, 0.5, Defaults(),
                    remembered);
  EXPECT_FALSE(v.failed);
  ASSERT_TRUE(remembered.http_5xx.has_value());
  EXPECT_NEAR(*remembered.http_5xx, 0.03, 1e-9);
  // Last wave: no baseline nodes. 5% is under 2 x 3%: ok.
  v = Judge(MakeSide(10000, 500, 0, 0, 10), Side(), 0.5, 0.5, Defaults(), remembered);
  EXPECT_FALSE(v.failed);
  // Nothing remembered (a one-node fleet): the floor alone decides.
  RememberedBaseline none;
  v = Judge(MakeSide(10000, 500, 0, 0, 1), Side(), 0.5, 0.5, Defaults(), none);
  EXPECT_TRUE(v.failed);
  EXPECT_NE(v.failure.find("no trusted baseline"), std::string::npos) << v.failure;
}

TEST(RolloutJudge, WebSocketRateIsPerNodeMinuteOverTheBake) {
  RememberedBaseline remembered;
  // 2 abnormal closes on one canary 6 s into a 30 s bake: 2 / (1 node x 0.5 min) = 4/min > 1,
  // and the baseline has none: fails.
  Verdict v = Judge(MakeSide(1000, 0, 0, 2, 1), MakeSide(9000, 0, 0, 0, 9), 0.1, 0.5, Defaults(),
                    remembered);
  EXPECT_TRUE(v.failed);
  EXPECT_NEAR(GateNamed(v, "ws_abnormal_close").canary(), 4.0, 1e-9);
  // One close over the same window: 2/min, but the baseline closes 1.5/min per node too.
  v = Judge(MakeSide(1000, 0, 0, 1, 1), MakeSide(9000, 0, 0, 6.75, 9), 0.1, 0.5, Defaults(),
            remembered);
  EXPECT_FALSE(v.failed);
  // No closes at all is a measurement, not silence.
  v = Judge(MakeSide(1000, 0, 0, 0, 1), MakeSide(9000, 0, 0, 0, 9), 0.1, 0.5, Defaults(),
            remembered);
  EXPECT_EQ(GateNamed(v, "ws_abnormal_close").verdict(), "ok");
}

// The fleet's side of a rollout: canary nodes get the new version, every other node (and a
// node that connects later) the stable one.
class Conn : public NodeConnection {
 public:
  void Offer(std::shared_ptr<const v1::ControlMessage> m) override {
    if (m->has_push()) versions.push_back(m->push().snapshot().version());
  }
  void Close(int, std::string) override {}
  std::vector<uint64_t> versions;
};

std::shared_ptr<const v1::Snapshot> Snap(uint64_t v) {
  auto s = std::make_shared<v1::Snapshot>();
  s->set_version(v);
  return s;
}

TEST(FleetTargets, CanariesGetTheNewVersionNewNodesTheStableOne) {
  Fleet fleet;
  fleet.Publish(Snap(4));
  Conn a, b, c;
  v1::Hello h;
  h.set_node_id("a");
  ASSERT_TRUE(fleet.Attach(&a, h).ok());
  h.set_node_id("b");
  ASSERT_TRUE(fleet.Attach(&b, h).ok());
  fleet.SetTargets(Snap(4), Snap(5), {"a"});
  EXPECT_EQ(a.versions, (std::vector<uint64_t>{4, 5}));
  EXPECT_EQ(b.versions, (std::vector<uint64_t>{4}));
  h.set_node_id("c");  // scale-up during the rollout
  ASSERT_TRUE(fleet.Attach(&c, h).ok());
  EXPECT_EQ(c.versions, (std::vector<uint64_t>{4}));
  EXPECT_EQ(fleet.TargetVersion("c"), 4u);
  EXPECT_EQ(fleet.List().latest_version(), 5u);
  // Rolled back: everyone gets the revert version.
  fleet.Publish(Snap(6));
  EXPECT_EQ(a.versions.back(), 6u);
  EXPECT_EQ(b.versions.back(), 6u);
  EXPECT_EQ(c.versions.back(), 6u);
  EXPECT_EQ(fleet.TargetVersion("a"), 6u);
}

}  // namespace
}  // namespace onedomain::controlplane::rollout
