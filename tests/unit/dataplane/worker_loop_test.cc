// A real worker thread: posts from this thread reach it, and coroutines on it wait until a
// time (by the worker's clock) or until resumed. Bounded: every wait gives up after 5 s. The
// loop itself (timers, wake-ups, file events) is covered by dispatcher_test.

#include <chrono>
#include <future>
#include <utility>

#include <gtest/gtest.h>

#include "dataplane/runtime/parked.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/worker/worker.h"

namespace onedomain::dataplane {
namespace {

namespace net = boost::asio;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;

class WorkerLoopTest : public ::testing::Test {
 protected:
  WorkerLoopTest() : catalog_(1), worker_(0, catalog_, nullptr) { worker_.Start(); }

  // Runs `fn` on the worker and waits for it.
  template <typename F>
  void OnWorker(F fn) {
    std::promise<void> done;
    worker_.Post([&] {
      fn();
      done.set_value();
    });
    ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready);
  }

  stats::StatsCatalog catalog_;
  Worker worker_;
};

TEST_F(WorkerLoopTest, WaitUntilExpiresAtItsTime) {
  std::promise<std::pair<error_code, Clock::duration>> result;
  Parked parked;
  auto coroutine = [&]() -> net::awaitable<void> {
    const auto start = worker_.Now();
    const error_code ec = co_await WaitUntil(parked, worker_.dispatcher(), start + 150ms);
    result.set_value({ec, worker_.Now() - start});
  };
  OnWorker([&] { worker_.dispatcher().Spawn(coroutine(), "test"); });
  auto f = result.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  const auto [ec, waited] = f.get();
  EXPECT_EQ(ec, net::error::timed_out);
  EXPECT_GE(waited, 150ms);
}

TEST_F(WorkerLoopTest, WaitUntilEndsWhenResumed) {
  std::promise<error_code> result;
  Parked parked;
  auto coroutine = [&]() -> net::awaitable<void> {
    result.set_value(co_await WaitUntil(parked, worker_.dispatcher(), worker_.Now() + 60s));
  };
  OnWorker([&] { worker_.dispatcher().Spawn(coroutine(), "test"); });
  OnWorker([&] {
    EXPECT_TRUE(parked.parked());
    parked.Post({});
  });
  auto f = result.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), error_code{});
}

// Connection balance: a worker hands its next connection to the least-loaded sibling only
// when it carries more than one plus a sixteenth of its load above it.
TEST(WorkerBalanceTest, UnbalancedNeedsMoreThanTheMargin) {
  EXPECT_FALSE(Worker::Unbalanced(0, 0));
  EXPECT_FALSE(Worker::Unbalanced(1, 0));
  EXPECT_TRUE(Worker::Unbalanced(2, 0));
  EXPECT_FALSE(Worker::Unbalanced(26, 24));  // margin 1 + 26 / 16 = 2
  EXPECT_TRUE(Worker::Unbalanced(27, 24));
  EXPECT_FALSE(Worker::Unbalanced(1600, 1500));  // margin 101
  EXPECT_TRUE(Worker::Unbalanced(1602, 1500));
}

TEST(WorkerBalanceTest, TheTargetIsTheLeastLoadedSiblingAndCountsWhatIsOnItsWay) {
  stats::StatsCatalog catalog(3);
  Worker a(0, catalog, nullptr);
  Worker b(1, catalog, nullptr);
  Worker c(2, catalog, nullptr);
  for (Worker* w : {&a, &b, &c}) w->set_siblings({&a, &b, &c});
  EXPECT_EQ(a.HandoffTarget(), nullptr) << "all idle: keep it";
  a.ConnectionOpened();
  a.ConnectionOpened();
  c.ConnectionOpened();
  EXPECT_EQ(a.HandoffTarget(), &b) << "2 against 0: the least loaded";
  b.ReserveHandoff();  // one on its way to b
  EXPECT_EQ(b.load(), 1u);
  EXPECT_EQ(a.HandoffTarget(), nullptr) << "2 against 1 (reserved) and 1";
  b.AdoptHandedOff();
  b.ConnectionOpened();
  EXPECT_EQ(b.load(), 1u);
  a.ConnectionClosed();
  EXPECT_EQ(a.load(), 1u);
  Worker alone(0, catalog, nullptr);
  alone.ConnectionOpened();
  alone.ConnectionOpened();
  EXPECT_EQ(alone.HandoffTarget(), nullptr) << "no siblings";
}

}  // namespace
}  // namespace onedomain::dataplane
