#include "dataplane/upstream/idle_pool.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace onedomain::dataplane {
namespace {

struct FakeConn {
  explicit FakeConn(int i, int* closed) : id(i), closed_count(closed) {}
  ~FakeConn() { ++*closed_count; }
  int id;
  int* closed_count;
};

using namespace std::chrono_literals;

TEST(IdlePoolTest, ReusesMostRecentFirst) {
  int closed = 0;
  IdlePool<FakeConn> pool;
  const auto t = Clock::now();
  EXPECT_EQ(pool.Put(std::make_unique<FakeConn>(1, &closed), t, 8), nullptr);
  EXPECT_EQ(pool.Put(std::make_unique<FakeConn>(2, &closed), t + 1s, 8), nullptr);
  auto c = pool.Take(t + 2s, 30s);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->id, 2);
  EXPECT_EQ(pool.size(), 1u);
}

TEST(IdlePoolTest, HonoursMaxIdle) {
  int closed = 0;
  IdlePool<FakeConn> pool;
  const auto t = Clock::now();
  EXPECT_EQ(pool.Put(std::make_unique<FakeConn>(1, &closed), t, 1), nullptr);
  auto rejected = pool.Put(std::make_unique<FakeConn>(2, &closed), t, 1);
  ASSERT_NE(rejected, nullptr);
  EXPECT_EQ(rejected->id, 2);
  EXPECT_EQ(pool.size(), 1u);
}

TEST(IdlePoolTest, NeverReusesStaleConnections) {
  int closed = 0;
  IdlePool<FakeConn> pool;
  const auto t = Clock::now();
  pool.Put(std::make_unique<FakeConn>(1, &closed), t, 8);
  pool.Put(std::make_unique<FakeConn>(2, &closed), t + 10s, 8);
  // At t+35s #2 is 25s old: still fresh, and the most recent.
  auto c = pool.Take(t + 35s, 30s);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->id, 2);
  // #1 is 45s old by now: taking it closes it instead.
  EXPECT_EQ(pool.Take(t + 45s, 30s), nullptr);
  EXPECT_EQ(closed, 1);
  EXPECT_TRUE(pool.empty());
}

TEST(IdlePoolTest, SweepClosesOnlyExpired) {
  int closed = 0;
  IdlePool<FakeConn> pool;
  const auto t = Clock::now();
  pool.Put(std::make_unique<FakeConn>(1, &closed), t, 8);
  pool.Put(std::make_unique<FakeConn>(2, &closed), t + 20s, 8);
  EXPECT_EQ(pool.Sweep(t + 31s, 30s), 1u);
  EXPECT_EQ(closed, 1);
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_EQ(pool.Sweep(t + 31s, 0s), 0u);  // 0: no idle timeout
}

TEST(IdlePoolTest, NoCapByDefault) {
  int closed = 0;
  IdlePool<FakeConn> pool;
  const auto t = Clock::now();
  for (int i = 0; i < 500; ++i)
    EXPECT_EQ(pool.Put(std::make_unique<FakeConn>(i, &closed), t, 0), nullptr);
  EXPECT_EQ(pool.size(), 500u);
  EXPECT_EQ(closed, 0);
}

// A burst of 200 concurrent requests, then 5 at a time for longer than idle_timeout: the
// pool reuses the same 5 connections (last in, first out) and the sweep closes the 195 the
// burst left behind once they have idled for idle_timeout. Before that, nothing is closed.
TEST(IdlePoolTest, FollowsDemandDownAfterABurst) {
  int closed = 0;
  IdlePool<FakeConn> pool;
  const auto t = Clock::now();
  for (int i = 0; i < 200; ++i) pool.Put(std::make_unique<FakeConn>(i, &closed), t, 0);
  for (int second = 1; second <= 40; ++second) {
    const auto now = t + std::chrono::seconds(second);
    std::vector<std::unique_ptr<FakeConn>> busy;
    for (int k = 0; k < 5; ++k) {
      busy.push_back(pool.Take(now, 30s));
      ASSERT_NE(busy.back(), nullptr);
    }
    for (auto& c : busy) pool.Put(std::move(c), now, 0);
    pool.Sweep(now, 30s);
    EXPECT_EQ(pool.size(), second < 30 ? 200u : 5u) << "at second " << second;
  }
  EXPECT_EQ(closed, 195);
}

}  // namespace
}  // namespace onedomain::dataplane
