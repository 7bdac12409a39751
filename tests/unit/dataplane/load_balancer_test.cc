#include "dataplane/upstream/load_balancer.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <vector>

#include "dataplane/upstream/host.h"

namespace onedomain::dataplane {
namespace {

using namespace std::chrono_literals;

class LoadBalancerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      owned_.push_back(std::make_unique<Host>(
          boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                         static_cast<uint16_t>(8000 + i)),
          "h:1", nullptr));
      hosts_.push_back(owned_.back().get());
    }
  }
  int Port(const Host* h) { return h == nullptr ? -1 : h->address().port() - 8000; }

  std::vector<std::unique_ptr<Host>> owned_;
  std::vector<Host*> hosts_;
  LoadBalancer lb_;
  Clock::time_point now_ = Clock::now();
};

TEST_F(LoadBalancerTest, RoundRobinVisitsEveryHostInTurn) {
  std::vector<int> order;
  for (int i = 0; i < 6; ++i) order.push_back(Port(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_)));
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

TEST_F(LoadBalancerTest, SkipsEjectedAndExcludedHosts) {
  OutlierConfig config{1, 30s};
  hosts_[1]->outlier().RecordFailure(config, now_);
  std::map<int, int> seen;
  for (int i = 0; i < 10; ++i) ++seen[Port(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_))];
  EXPECT_EQ(seen.count(1), 0u);
  EXPECT_EQ(seen[0] + seen[2], 10);
  EXPECT_EQ(Port(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_, hosts_[0])), 2);
  // Ejection ends after ejection_time.
  bool saw_one = false;
  for (int i = 0; i < 3; ++i)
    saw_one |= Port(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_ + 31s)) == 1;
  EXPECT_TRUE(saw_one);
}

TEST_F(LoadBalancerTest, NoHealthyHostGivesNull) {
  OutlierConfig config{1, 30s};
  for (Host* h : hosts_) h->outlier().RecordFailure(config, now_);
  EXPECT_EQ(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_), nullptr);
  EXPECT_EQ(lb_.Pick(LbPolicy::kLeastRequest, hosts_, now_), nullptr);
  EXPECT_EQ(lb_.Pick(LbPolicy::kRoundRobin, std::span<Host* const>(), now_), nullptr);
}

TEST_F(LoadBalancerTest, LeastRequestPicksFewestInFlightTiesInTurn) {
  hosts_[0]->inflight = 3;
  hosts_[1]->inflight = 1;
  hosts_[2]->inflight = 2;
  EXPECT_EQ(Port(lb_.Pick(LbPolicy::kLeastRequest, hosts_, now_)), 1);
  hosts_[0]->inflight = 0;
  hosts_[1]->inflight = 0;
  hosts_[2]->inflight = 0;
  std::vector<int> order;
  for (int i = 0; i < 3; ++i)
    order.push_back(Port(lb_.Pick(LbPolicy::kLeastRequest, hosts_, now_)));
  std::sort(order.begin(), order.end());
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));  // ties rotate
}

}  // namespace

TEST_F(LoadBalancerTest, BelowThePanicThresholdEveryHostIsACandidate) {
  OutlierConfig config{1, 30s};
  // One of three ejected: 66 % healthy, above a 50 % threshold: the ejected one is skipped.
  hosts_[1]->outlier().RecordFailure(config, now_);
  for (int i = 0; i < 6; ++i)
    EXPECT_NE(Port(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_, nullptr, 50)), 1);
  // Two of three ejected: 33 % < 50 %: panic, all three are used again.
  hosts_[2]->outlier().RecordFailure(config, now_);
  std::map<int, int> seen;
  for (int i = 0; i < 6; ++i)
    ++seen[Port(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_, nullptr, 50))];
  EXPECT_EQ(seen.size(), 3u);
  // Threshold 0: no panic, only the healthy host.
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(Port(lb_.Pick(LbPolicy::kRoundRobin, hosts_, now_, nullptr, 0)), 0);
}

TEST_F(LoadBalancerTest, TheOnlyEndpointIsNeverEjectedWithTheDefaultThreshold) {
  std::vector<Host*> one = {hosts_[0]};
  OutlierConfig config;  // defaults: 5 failures, panic threshold 50 %
  for (int i = 0; i < 10; ++i) hosts_[0]->outlier().RecordFailure(config, now_);
  EXPECT_FALSE(hosts_[0]->outlier().Healthy(now_));
  EXPECT_EQ(lb_.Pick(LbPolicy::kRoundRobin, one, now_, nullptr, config.panic_threshold_percent),
            hosts_[0]);
}

}  // namespace onedomain::dataplane
