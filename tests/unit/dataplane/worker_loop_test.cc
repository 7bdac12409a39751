// The worker's own event loop: a real worker thread, woken by posts from this thread, with
// waits that end by expiry (the deadline sweep) or by being resumed. Bounded: every wait
// here gives up after 5 s.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/io_context.hpp>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

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

// Runs `fn` on `worker` and waits for it; false if it did not run within 5 s.
template <typename F>
bool RunOn(Worker& worker, F fn) {
  std::promise<void> done;
  worker.Post([&] {
    fn();
    done.set_value();
  });
  return done.get_future().wait_for(5s) == std::future_status::ready;
}

// Watches the worker's deadline tick from another thread. A deadline armed at a time long
// past stays armed, so every sweep, and there is one per tick, fires it again: each firing
// is one tick, stamped with the time it ran.
class TickProbe {
 public:
  struct Tick {
    uint64_t count = 0;
    Clock::time_point at{};
    // The shortest time between two ticks seen so far: the loop's tick period (a busy or
    // preempted loop only makes ticks later, never earlier).
    Clock::duration period = Clock::duration::max();
  };

  explicit TickProbe(Worker& worker)
      : worker_(worker), deadline_(worker.deadlines(), &TickProbe::OnSweep, this) {
    armed_ = RunOn(worker_, [this] {
      worker_tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
      deadline_.ArmAt(Clock::time_point{});
    });
  }
  ~TickProbe() { RunOn(worker_, [this] { deadline_.Disarm(); }); }

  bool armed() const { return armed_; }
  pid_t worker_tid() const { return worker_tid_; }

  Tick Latest() {
    std::lock_guard lock(mu_);
    return latest_;
  }

  // Waits (up to `timeout`) for a tick after the `count`th.
  std::optional<Tick> WaitForTickAfter(uint64_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return latest_.count > count; })) return std::nullopt;
    return latest_;
  }

 private:
  static void OnSweep(void* arg) {
    auto* self = static_cast<TickProbe*>(arg);
    const Clock::time_point now = Clock::now();
    {
      std::lock_guard lock(self->mu_);
      Tick& t = self->latest_;
      if (t.count > 0) t.period = std::min(t.period, now - t.at);
      ++t.count;
      t.at = now;
    }
    self->cv_.notify_all();
  }

  Worker& worker_;
  Deadline deadline_;
  bool armed_ = false;
  pid_t worker_tid_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  Tick latest_;
};

// True while thread `tid` of this process is inside epoll_wait, the worker loop's only
// blocking call (the kernel names the system call a thread is in; "running" when it is on
// a CPU in user space).
bool InEpollWait(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long nr = -1;
  if (!(f >> nr)) return false;
#ifdef SYS_epoll_wait
  if (nr == SYS_epoll_wait) return true;
#endif
  return nr == SYS_epoll_pwait;
}

TEST_F(WorkerLoopTest, APostFromAnotherThreadWakesTheSleepingLoop) {
  // Right after a tick the loop sleeps in epoll_wait until the next one is due. A post that
  // wakes it runs well before then; a post left for the tick runs at the tick's time or
  // later, whatever the machine's load. So: wait for a tick, wait until the loop is asleep
  // again, post, and see whether the post ran before half a tick period had passed. One
  // such try proves the wake-up; a try can miss only by being slow (this thread noticed the
  // tick late, or the machine is busy), never by luck, so a few tries are allowed.
  TickProbe probe(worker_);
  ASSERT_TRUE(probe.armed());
  // Two ticks first, so the probe knows the period.
  std::optional<TickProbe::Tick> tick = probe.WaitForTickAfter(1, 5000ms);
  ASSERT_TRUE(tick.has_value()) << "the loop does not tick";

  constexpr int kTries = 20;  // each takes about one tick period
  int tries = 0;
  int posted = 0;
  bool woken = false;
  Clock::duration fastest = Clock::duration::max();
  while (tries < kTries && !woken) {
    ++tries;
    tick = probe.WaitForTickAfter(tick->count, 5000ms);
    ASSERT_TRUE(tick.has_value()) << "the loop stopped ticking";
    const Clock::time_point window_end = tick->at + tick->period / 2;
    // Bounded by the window (and a count, should the clock misbehave).
    bool asleep = false;
    for (int polls = 0; polls < 100000 && Clock::now() < window_end; ++polls) {
      if (InEpollWait(probe.worker_tid())) {
        asleep = true;
        break;
      }
      std::this_thread::yield();
    }
    // Not asleep in time, or a tick came in between: nothing to learn from this try.
    if (!asleep || probe.Latest().count != tick->count) continue;

    ++posted;
    std::promise<std::pair<uint64_t, Clock::time_point>> ran;
    worker_.Post([&] { ran.set_value({probe.Latest().count, Clock::now()}); });
    auto f = ran.get_future();
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "the post never ran";
    const auto [count, at] = f.get();
    fastest = std::min(fastest, at - tick->at);
    // Handlers run before the sweep in a loop turn, so a post left for the tick also runs
    // with the old count; only its time tells the two apart.
    woken = count == tick->count && at < window_end;
  }
  const auto ms = [](Clock::duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count() / 1000.0;
  };
  ASSERT_GT(posted, 0) << "the loop was never seen asleep in epoll_wait soon after a tick";
  EXPECT_TRUE(woken) << "of " << posted << " posts to the sleeping loop, none ran before its "
                     << "next tick was due (period " << ms(tick->period) << " ms); the earliest "
                     << "ran " << ms(fastest) << " ms after a tick: the post does not wake it";
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
