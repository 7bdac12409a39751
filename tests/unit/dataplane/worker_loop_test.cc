// The worker's own event loop: a real worker thread, woken by posts from this thread, with
// waits that end by expiry (the deadline sweep) or by being resumed. Bounded: every wait
// here gives up after 5 s.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <future>

#include <gtest/gtest.h>

#include "dataplane/runtime/parked.h"
#include "dataplane/runtime/worker.h"
#include "dataplane/stats/dataplane_stats.h"

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

TEST_F(WorkerLoopTest, APostFromAnotherThreadWakesTheSleepingLoop) {
  std::this_thread::sleep_for(120ms);  // the loop is asleep in the poller by now
  const auto start = std::chrono::steady_clock::now();
  OnWorker([] {});
  // Not a timing assertion on speed: only that the post was not left for a tick (50 ms)
  // or for ever. Generous, so a loaded machine does not fail it.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST_F(WorkerLoopTest, WaitUntilExpiresAtItsTime) {
  std::promise<std::pair<error_code, std::chrono::steady_clock::duration>> result;
  Parked parked;
  OnWorker([&] {
    net::co_spawn(worker_.io_context(), [&]() -> net::awaitable<void> {
      const auto start = Clock::now();
      const error_code ec =
          co_await WaitUntil(parked, worker_.deadlines(), start + std::chrono::milliseconds(150));
      result.set_value({ec, Clock::now() - start});
    }, net::detached);
  });
  auto f = result.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  const auto [ec, waited] = f.get();
  EXPECT_EQ(ec, net::error::timed_out);
  EXPECT_GE(waited, 150ms);
}

TEST_F(WorkerLoopTest, WaitUntilEndsWhenResumed) {
  std::promise<error_code> result;
  Parked parked;
  OnWorker([&] {
    net::co_spawn(worker_.io_context(), [&]() -> net::awaitable<void> {
      result.set_value(co_await WaitUntil(parked, worker_.deadlines(), Clock::now() + 60s));
    }, net::detached);
  });
  OnWorker([&] {
    EXPECT_TRUE(parked.parked());
    parked.Post({});
  });
  auto f = result.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), error_code{});
}

TEST_F(WorkerLoopTest, NothingStartsAsiosReactorOnTheWorker) {
  OnWorker([] {});
  EXPECT_FALSE(net::has_service<net::detail::reactor>(worker_.io_context()));
}

}  // namespace
}  // namespace onedomain::dataplane
