#include "dataplane/upstream/idle_pool.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace onedomain::dataplane
