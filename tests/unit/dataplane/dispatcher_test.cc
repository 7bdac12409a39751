// The worker's event loop: timers on a manual clock (millisecond resolution, refiring while
// left armed, lazy re-arming), file events, posts from other threads waking a sleeping loop,
// coroutines, deferred deletion and shutdown. Bounded: every wait here gives up after 5 s.

#include "dataplane/runtime/dispatcher.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/detail/thread_context.hpp>
#include <boost/asio/error.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/runtime/parked.h"
#include "dataplane/runtime/unique_fd.h"
#include "tests/unit/dataplane/loopback.h"
#include "tests/unit/dataplane/manual_time.h"

namespace onedomain::dataplane {
namespace {

namespace net = boost::asio;
using namespace std::chrono_literals;
using error_code = boost::system::error_code;
using testing::ManualTime;

class DispatcherTimerTest : public ::testing::Test {
 protected:
  // One turn of the loop that does not sleep: due timers run.
  void Turn() { ASSERT_TRUE(dispatcher_.RunOnce(0ms)); }

  ManualTime time_;
  Dispatcher dispatcher_{time_};
};

TEST_F(DispatcherTimerTest, FiresAtItsMillisecondAndRefiresUntilDisarmed) {
  int fired = 0;
  Timer t(dispatcher_, [&] { ++fired; });
  t.Arm(7ms);
  time_.Advance(6ms);
  Turn();
  EXPECT_EQ(fired, 0) << "fired a millisecond early";
  EXPECT_FALSE(t.fired());
  time_.Advance(1ms);
  Turn();
  EXPECT_EQ(fired, 1) << "not fired at its millisecond";
  EXPECT_TRUE(t.fired());
  Turn();
  EXPECT_EQ(fired, 1) << "fired twice at the same time";
  // Still armed past its time: fires again, so a later operation cannot slip through.
  time_.Advance(Timer::kRefire);
  Turn();
  EXPECT_EQ(fired, 2);
  t.Disarm();
  EXPECT_TRUE(t.fired()) << "the owner may ask why its operation failed after disarming";
  time_.Advance(1h);
  Turn();
  EXPECT_EQ(fired, 2);
  t.Arm(1h);
  EXPECT_FALSE(t.fired());
}

TEST_F(DispatcherTimerTest, RearmingLaterMovesItAndZeroDisarms) {
  int fired = 0;
  Timer t(dispatcher_, [&] { ++fired; });
  t.Arm(10ms);
  time_.Advance(5ms);
  t.Arm(10ms);  // now due 15 ms from the start (what every read does to its deadline)
  time_.Advance(5ms);
  Turn();
  EXPECT_EQ(fired, 0) << "fired at the time it was first armed for";
  time_.Advance(5ms);
  Turn();
  EXPECT_EQ(fired, 1);
  t.Arm(1h);
  EXPECT_TRUE(t.armed());
  t.Arm(0s);  // configs use 0 for "no limit"
  EXPECT_FALSE(t.armed());
  time_.Advance(2h);
  Turn();
  EXPECT_EQ(fired, 1);
}

TEST_F(DispatcherTimerTest, RearmingEarlierMovesItForward) {
  int fired = 0;
  Timer t(dispatcher_, [&] { ++fired; });
  t.Arm(1h);
  t.Arm(3ms);
  time_.Advance(3ms);
  Turn();
  EXPECT_EQ(fired, 1);
}

TEST_F(DispatcherTimerTest, ManyTimersFireInTheirOrderAndDestructionUnqueues) {
  std::vector<int> order;
  std::vector<std::unique_ptr<Timer>> timers;
  // Armed in a scrambled order: 0 ms, 7, 14, ... 63 ms apart by index * 7 mod 64.
  for (int i = 0; i < 64; ++i) {
    timers.push_back(std::make_unique<Timer>(dispatcher_, [&order, &timers, i] {
      order.push_back(i);
      timers[i]->Disarm();
    }));
  }
  for (int i = 0; i < 64; ++i) timers[i]->Arm(std::chrono::milliseconds(1 + (i * 7) % 64));
  timers[5].reset();  // destroyed while queued
  for (int ms = 1; ms <= 64; ++ms) {
    time_.Advance(1ms);
    Turn();
  }
  ASSERT_EQ(order.size(), 63u);
  for (size_t k = 1; k < order.size(); ++k) {
    EXPECT_LT((order[k - 1] * 7) % 64, (order[k] * 7) % 64) << "out of order at " << k;
  }
  for (int i : order) EXPECT_NE(i, 5);
  timers.clear();
  EXPECT_EQ(dispatcher_.timers_queued(), 0u);
}

TEST_F(DispatcherTimerTest, AnActionMayDestroyItsOwnTimer) {
  auto t = std::make_unique<Timer>(dispatcher_, [] {});
  t->set_action([&t] { t.reset(); });
  t->Arm(1ms);
  time_.Advance(1ms);
  Turn();
  EXPECT_EQ(t, nullptr);
  EXPECT_EQ(dispatcher_.timers_queued(), 0u);
}

TEST_F(DispatcherTimerTest, WaitUntilExpiresByTheDispatchersClock) {
  Parked parked(dispatcher_);
  std::optional<error_code> result;
  auto coroutine = [&]() -> net::awaitable<void> {
    result = co_await WaitUntil(parked, dispatcher_, time_.Now() + 30s);
  };
  dispatcher_.Spawn(coroutine(), "test");
  Turn();
  EXPECT_TRUE(parked.parked());
  time_.Advance(29s);
  Turn();
  Turn();
  EXPECT_FALSE(result.has_value()) << "expired early";
  time_.Advance(1s);
  for (int i = 0; i < 3 && !result; ++i) Turn();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, net::error::timed_out);
}

// The tests below run on both file-event backends (io_uring only where the kernel allows it).
class DispatcherTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    std::string why;
    if (GetParam() == IoBackend::kIoUring && !Dispatcher::IoUringAvailable(&why)) {
      GTEST_SKIP() << "io_uring is not available here: " << why;
    }
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, DispatcherTest,
                         ::testing::Values(IoBackend::kEpoll, IoBackend::kIoUring),
                         [](const auto& info) { return std::string(IoBackendName(info.param)); });

// True while thread `tid` of this process is inside epoll_wait (io_uring_enter), the loop's
// only blocking call (the kernel names the system call a thread is in).
bool InEpollWait(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long nr = -1;
  if (!(f >> nr)) return false;
  if (nr == SYS_io_uring_enter) return true;
#ifdef SYS_epoll_wait
  if (nr == SYS_epoll_wait) return true;
#endif
  return nr == SYS_epoll_pwait;
}

// Runs `dispatcher` on `loop`; returns the loop thread's id, or 0 when it did not report it
// within 5 s.
pid_t RunOnThread(Dispatcher& dispatcher, std::thread& loop) {
  auto tid = std::make_shared<std::promise<pid_t>>();  // the post may outlive a timeout here
  dispatcher.Post([tid] { tid->set_value(static_cast<pid_t>(::syscall(SYS_gettid))); });
  auto reported = tid->get_future();
  loop = std::thread([&dispatcher] { dispatcher.Run(); });
  return reported.wait_for(5s) == std::future_status::ready ? reported.get() : 0;
}

// Whether loop thread `tid` is seen asleep in its wait within 5 s (polled, bounded).
bool SeenAsleep(pid_t tid) {
  for (int i = 0; i < 5000; ++i) {
    if (InEpollWait(tid)) return true;
    std::this_thread::sleep_for(1ms);  // polling a condition, bounded
  }
  return false;
}

// Completions and timers run from the loop itself, outside Asio's poll_one, and resume
// coroutines there: Asio recycles the frames they make and free only through a thread
// context, which the loop provides for its whole run (not only inside poll_one).
TEST_P(DispatcherTest, TheLoopsOwnCallbacksRunInsideAnAsioThreadContext) {
  Dispatcher dispatcher(RealTime(), GetParam());
  std::promise<bool> seen;
  Timer timer(dispatcher, [&seen] {
    seen.set_value(boost::asio::detail::thread_context::top_of_thread_call_stack() != nullptr);
  });
  dispatcher.Post([&] { timer.ArmAt(dispatcher.Now()); });  // fires from RunTimers
  bool left_after_run = true;
  std::thread loop([&dispatcher, &left_after_run] {
    dispatcher.Run();
    left_after_run = boost::asio::detail::thread_context::top_of_thread_call_stack() != nullptr;
  });
  auto result = seen.get_future();
  const bool fired = result.wait_for(5s) == std::future_status::ready;
  dispatcher.Stop();
  loop.join();
  ASSERT_TRUE(fired) << "the timer did not fire within 5 s";
  EXPECT_TRUE(result.get()) << "a timer action ran with no Asio thread context";
  EXPECT_FALSE(left_after_run) << "the loop's context outlived Run";
}

TEST_P(DispatcherTest, APostFromAnotherThreadWakesTheSleepingLoop) {
  // With no timer armed the loop sleeps in epoll_wait with no timeout: a post that did not
  // wake it would never run.
  Dispatcher dispatcher(RealTime(), GetParam());
  std::thread loop;
  const pid_t loop_tid = RunOnThread(dispatcher, loop);
  const bool asleep = loop_tid != 0 && SeenAsleep(loop_tid);
  std::promise<void> ran;
  dispatcher.Post([&] { ran.set_value(); });
  const bool woken = ran.get_future().wait_for(5s) == std::future_status::ready;
  dispatcher.Stop();
  loop.join();
  ASSERT_TRUE(asleep) << "the loop was never seen asleep in epoll_wait";
  EXPECT_TRUE(woken) << "a post to the sleeping loop did not run within 5 s";
}

std::pair<UniqueFd, UniqueFd> SocketPair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) return {};
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

class Readable final : public FileEvents {
 public:
  void OnFileEvents(uint32_t events) override {
    seen |= events;
    ++calls;
  }
  void OnAbandon() override { abandoned = true; }
  uint32_t seen = 0;
  int calls = 0;
  bool abandoned = false;
};

TEST_P(DispatcherTest, FileEventsReachTheirHandler) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r));
  for (int i = 0; i < 100 && r.calls == 0; ++i) dispatcher.RunOnce(10ms);
  EXPECT_NE(r.seen & EPOLLOUT, 0u) << "the first edge reports the socket writable";
  r.seen = 0;
  ASSERT_EQ(::write(b.get(), "x", 1), 1);
  for (int i = 0; i < 100 && (r.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  EXPECT_NE(r.seen & EPOLLIN, 0u);
  dispatcher.Forget(r);
  dispatcher.Shutdown();
  EXPECT_FALSE(r.abandoned) << "a forgotten handler is not abandoned";
}

// Each, when called, ends the other (forgets it and closes its descriptor), as a tunnel
// side that closes both sockets does.
class EndsTheOther final : public FileEvents {
 public:
  EndsTheOther(Dispatcher& d, UniqueFd fd) : dispatcher(d), fd(std::move(fd)) {}
  void OnFileEvents(uint32_t) override {
    ++calls;
    dispatcher.Forget(*other);
    other->fd.reset();
  }
  void OnAbandon() override {}
  Dispatcher& dispatcher;
  UniqueFd fd;
  EndsTheOther* other = nullptr;
  int calls = 0;
};

TEST_P(DispatcherTest, AHandlerForgottenMidTurnGetsNoEventOfThatTurn) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [end1, peer1] = SocketPair();
  auto [end2, peer2] = SocketPair();
  ASSERT_TRUE(end1 && end2);
  EndsTheOther h1(dispatcher, std::move(end1));
  EndsTheOther h2(dispatcher, std::move(end2));
  h1.other = &h2;
  h2.other = &h1;
  // Both descriptors are ready (writable) before the first turn: one batch holds both.
  ASSERT_TRUE(dispatcher.Watch(h1.fd.get(), h1));
  ASSERT_TRUE(dispatcher.Watch(h2.fd.get(), h2));
  for (int i = 0; i < 100 && h1.calls + h2.calls == 0; ++i) dispatcher.RunOnce(10ms);
  EXPECT_EQ(h1.calls + h2.calls, 1) << "the forgotten handler still got its event";
}

// Forget, then close: the descriptor really closes (the peer reads end-of-file) within a
// turn. The io_uring backend's poll request holds the file until its removal is submitted.
TEST_P(DispatcherTest, ADescriptorClosedAfterForgetReallyCloses) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r));
  for (int i = 0; i < 100 && r.calls == 0; ++i) dispatcher.RunOnce(10ms);
  ASSERT_GT(r.calls, 0);
  dispatcher.Forget(r);
  a.reset();
  dispatcher.RunOnce(0ms);
  char byte;
  EXPECT_EQ(::read(b.get(), &byte, 1), 0) << "the peer did not see the close";
  // And a handler forgotten with events pending gets none of them.
  const int calls = r.calls;
  for (int i = 0; i < 5; ++i) dispatcher.RunOnce(1ms);
  EXPECT_EQ(r.calls, calls);
}

// A loop that yields the CPU before it sleeps (what the server sets with 2+ workers) still
// sleeps when idle, and bytes written to one of its sockets from another thread, then a
// post, still wake it.
class Signalled final : public FileEvents {
 public:
  void OnFileEvents(uint32_t events) override {
    if ((events & EPOLLIN) != 0 && !fired) {
      fired = true;
      readable.set_value();
    }
  }
  void OnAbandon() override {}
  bool fired = false;  // the loop's thread only
  std::promise<void> readable;
};

TEST_P(DispatcherTest, AYieldingLoopStillSleepsAndWakesForBytesAndPosts) {
  Dispatcher dispatcher(RealTime(), GetParam());
  dispatcher.set_yield_before_sleep(true);
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Signalled r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r, /*ring_reads=*/true));
  dispatcher.StartRingReads(r);
  std::thread loop;
  const pid_t loop_tid = RunOnThread(dispatcher, loop);
  const bool asleep_before_bytes = loop_tid != 0 && SeenAsleep(loop_tid);
  const bool wrote = ::write(b.get(), "x", 1) == 1;
  const bool bytes_seen = r.readable.get_future().wait_for(5s) == std::future_status::ready;
  const bool asleep_before_post = loop_tid != 0 && SeenAsleep(loop_tid);
  std::promise<void> ran;
  dispatcher.Post([&] { ran.set_value(); });
  const bool woken = ran.get_future().wait_for(5s) == std::future_status::ready;
  std::promise<void> forgotten;  // on the loop's thread, before the handler goes away
  dispatcher.Post([&] {
    dispatcher.Forget(r);
    forgotten.set_value();
  });
  const bool forgot = forgotten.get_future().wait_for(5s) == std::future_status::ready;
  dispatcher.Stop();
  loop.join();
  EXPECT_TRUE(forgot);
  ASSERT_NE(loop_tid, 0) << "the loop did not start";
  ASSERT_TRUE(wrote);
  EXPECT_TRUE(asleep_before_bytes) << "the idle loop was never seen asleep";
  EXPECT_TRUE(bytes_seen) << "bytes written to a watched socket did not reach its handler";
  EXPECT_TRUE(asleep_before_post) << "the loop did not go back to sleep";
  EXPECT_TRUE(woken) << "a post to the sleeping loop did not run within 5 s";
}

// Ring reads (io_uring): bytes come with the EPOLLIN event and wait, received, until read;
// the end follows them. Forgotten with bytes unread, the descriptor still closes at once.
TEST_P(DispatcherTest, RingReadsHandOutReceivedBytesThenTheEnd) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r, /*ring_reads=*/true));
  EXPECT_EQ(r.ring_reads(), GetParam() == IoBackend::kIoUring && dispatcher.ring_reads_available());
  if (!r.ring_reads()) {
    dispatcher.Forget(r);
    GTEST_SKIP() << "no ring reads with this backend";
  }
  dispatcher.StartRingReads(r);
  ASSERT_EQ(::write(b.get(), "hello", 5), 5);
  for (int i = 0; i < 100 && (r.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  ASSERT_NE(r.seen & EPOLLIN, 0u);
  EXPECT_TRUE(dispatcher.RingPending(r));
  char buf[8];
  int err = -1;
  EXPECT_EQ(dispatcher.RingRead(r, buf, 2, /*peek=*/true, &err), 2u);
  EXPECT_EQ(std::string(buf, 2), "he");
  EXPECT_EQ(dispatcher.RingRead(r, buf, sizeof(buf), false, &err), 5u);
  EXPECT_EQ(std::string(buf, 5), "hello");
  EXPECT_EQ(dispatcher.RingRead(r, buf, sizeof(buf), false, &err), 0u);
  EXPECT_EQ(err, EAGAIN);
  EXPECT_FALSE(dispatcher.RingPending(r));
  ASSERT_EQ(::write(b.get(), "!", 1), 1);
  ::shutdown(b.get(), SHUT_WR);
  r.seen = 0;
  for (int i = 0; i < 100 && (r.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  // Unread bytes hold the next receive back (they stay in the socket, as with epoll): the
  // end comes once they are read.
  EXPECT_EQ(dispatcher.RingRead(r, buf, sizeof(buf), false, &err), 1u);
  r.seen = 0;
  for (int i = 0; i < 100 && (r.seen & EPOLLRDHUP) == 0; ++i) dispatcher.RunOnce(10ms);
  EXPECT_NE(r.seen & EPOLLRDHUP, 0u);
  EXPECT_EQ(dispatcher.RingRead(r, buf, sizeof(buf), false, &err), 0u);
  EXPECT_EQ(err, 0) << "the end did not follow the bytes";
  // Unread bytes from the other way round, then Forget and close.
  auto [c, d] = SocketPair();
  Readable r2;
  ASSERT_TRUE(dispatcher.Watch(c.get(), r2, true));
  dispatcher.StartRingReads(r2);
  ASSERT_EQ(::write(d.get(), "unread", 6), 6);
  for (int i = 0; i < 100 && (r2.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  dispatcher.Forget(r2);
  c.reset();
  dispatcher.RunOnce(0ms);
  char byte;
  EXPECT_EQ(::read(d.get(), &byte, 1), 0) << "the peer did not see the close";
  dispatcher.Forget(r);
}

// events_waiting: with io_uring, true once a completion sits in the ring (or the kernel flags
// task work that makes one) and false again after the turn that collects it; the epoll
// backend cannot tell and always says false.
TEST_P(DispatcherTest, EventsWaitingSaysWhetherTheNextTurnWouldFindCompletions) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r, /*ring_reads=*/true));
  dispatcher.StartRingReads(r);
  dispatcher.RunOnce(0ms);  // submits the receive (io_uring)
  dispatcher.RunOnce(0ms);
  EXPECT_FALSE(dispatcher.events_waiting()) << "nothing happened, yet events are waiting";
  ASSERT_EQ(::write(b.get(), "x", 1), 1);
  bool waiting = dispatcher.events_waiting();
  const auto until = std::chrono::steady_clock::now() + 2s;
  while (GetParam() == IoBackend::kIoUring && !waiting &&
         std::chrono::steady_clock::now() < until) {
    waiting = dispatcher.events_waiting();
    if (!waiting) std::this_thread::yield();
  }
  if (GetParam() == IoBackend::kEpoll) {
    EXPECT_FALSE(waiting) << "the epoll backend claims to know";
  } else {
    EXPECT_TRUE(waiting) << "a received byte left no sign in the ring within 2 s";
  }
  EXPECT_EQ(r.seen & EPOLLIN, 0u) << "delivered before the loop turned";
  for (int i = 0; i < 100 && (r.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  EXPECT_NE(r.seen & EPOLLIN, 0u);
  EXPECT_FALSE(dispatcher.events_waiting()) << "still waiting after the turn that collected it";
  dispatcher.Forget(r);
}

// Lends what a receive brought without copying it, then consumes part of it while the
// handler runs (the rest moves to the backlog when the handler returns).
class Lender final : public FileEvents {
 public:
  explicit Lender(Dispatcher& dispatcher) : dispatcher_(dispatcher) {}
  void OnFileEvents(uint32_t events) override {
    seen |= events;
    const char* data = nullptr;
    int err = -1;
    const size_t n = dispatcher_.RingLend(*this, &data, &err);
    if (n > 0) lent.emplace_back(data, n);
    dispatcher_.RingConsume(*this, std::min(n, take));
  }
  void OnAbandon() override {}
  uint32_t seen = 0;
  std::vector<std::string> lent;  // what each call saw
  size_t take = 0;                // how much of it each call consumes

 private:
  Dispatcher& dispatcher_;
};

TEST_P(DispatcherTest, RingLendShowsReceivedBytesUntilTheyAreConsumed) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Lender r(dispatcher);
  ASSERT_TRUE(dispatcher.Watch(a.get(), r, /*ring_reads=*/true));
  if (!r.ring_reads()) {
    dispatcher.Forget(r);
    GTEST_SKIP() << "no ring reads with this backend";
  }
  dispatcher.StartRingReads(r);
  r.take = 2;
  ASSERT_EQ(::write(b.get(), "hello", 5), 5);
  for (int i = 0; i < 100 && (r.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  ASSERT_EQ(r.lent, std::vector<std::string>{"hello"});
  // The handler consumed 2; the rest is still there, lent again (from the backlog now).
  const char* data = nullptr;
  int err = -1;
  ASSERT_EQ(dispatcher.RingLend(r, &data, &err), 3u);
  EXPECT_EQ(std::string(data, 3), "llo");
  dispatcher.RingConsume(r, 1);
  ASSERT_EQ(dispatcher.RingLend(r, &data, &err), 2u);
  EXPECT_EQ(std::string(data, 2), "lo");
  char buf[8];
  EXPECT_EQ(dispatcher.RingRead(r, buf, sizeof(buf), false, &err), 2u) << "Read and Lend disagree";
  EXPECT_EQ(std::string(buf, 2), "lo");
  EXPECT_EQ(dispatcher.RingLend(r, &data, &err), 0u);
  EXPECT_EQ(err, EAGAIN);
  // Everything was consumed: the next receive runs, and the end follows its bytes.
  ASSERT_EQ(::write(b.get(), "!", 1), 1);
  ::shutdown(b.get(), SHUT_WR);
  for (int i = 0; i < 100 && (dispatcher.RingLend(r, &data, &err) > 0 || err != 0); ++i) {
    dispatcher.RunOnce(10ms);
  }
  EXPECT_EQ(err, 0) << "the end did not come";
  EXPECT_EQ(r.lent, (std::vector<std::string>{"hello", "!"})) << "the end came before the bytes";
  dispatcher.Forget(r);
}

// A descriptor forgotten and closed while its wake-up is on the way (with io_uring's deferred
// task work, the wake-up waits for the next io_uring_enter, and a removal then finds the poll
// "already completing"): the requests still end, so the socket really closes.
TEST_P(DispatcherTest, AForgottenDescriptorClosesWhileItsWakeUpIsOnTheWay) {
  Dispatcher dispatcher(RealTime(), GetParam());
  for (const bool ring : {false, true}) {
    for (int round = 0; round < 50; ++round) {
      auto [a, b] = SocketPair();
      ASSERT_TRUE(a && b);
      Readable r;
      ASSERT_TRUE(dispatcher.Watch(a.get(), r, ring));
      dispatcher.StartRingReads(r);
      dispatcher.RunOnce(0ms);                 // the requests are in the kernel
      ASSERT_EQ(::write(b.get(), "x", 1), 1);  // wakes them: their completion is on the way
      dispatcher.Forget(r);
      a.reset();
      char byte;
      ssize_t n = -1;
      for (int i = 0; i < 100 && n != 0; ++i) {
        dispatcher.RunOnce(1ms);
        n = ::read(b.get(), &byte, 1);
      }
      EXPECT_EQ(n, 0) << "the peer never saw the close (ring reads " << ring << ", round " << round
                      << ")";
      if (n != 0) return;
    }
  }
}

// Starts ring reads (and so ring sends) for `r`, watched with ring_reads; false, with `r`
// forgotten, on a backend without them.
bool StartRingSends(Dispatcher& dispatcher, Readable& r) {
  if (!r.ring_reads()) {
    dispatcher.Forget(r);
    return false;
  }
  dispatcher.StartRingReads(r);
  return true;
}

// Writes 4 KiB at a time, turning the loop, until the queue is full behind a peer that does
// not read (*err EAGAIN) or 10,000 writes went. Returns the bytes taken.
size_t FillSendQueue(Dispatcher& dispatcher, Readable& r, int* err) {
  std::string chunk(4096, 'q');
  iovec one{chunk.data(), chunk.size()};
  size_t queued = 0;
  for (int i = 0; i < 10000; ++i) {
    const size_t k = dispatcher.RingWrite(r, &one, 1, err);
    queued += k;
    if (k == 0) break;
    dispatcher.RunOnce(0ms);
  }
  return queued;
}

// Turns the loop until `fd` is closed, for 15 s at most; returns how long that took.
std::chrono::steady_clock::duration RunUntilClosed(Dispatcher& dispatcher, int fd,
                                                   std::chrono::milliseconds turn) {
  const auto start = std::chrono::steady_clock::now();
  while (::fcntl(fd, F_GETFD) != -1 && std::chrono::steady_clock::now() - start < 15s) {
    dispatcher.RunOnce(turn);
  }
  return std::chrono::steady_clock::now() - start;
}

// Ring sends (io_uring): writes queue and go out in order; closing waits for them, but for
// kLingerTime (10 s) at most when the peer stops reading.
TEST_P(DispatcherTest, RingSendsGoOutInOrderAndACloseLingersBoundedly) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r, /*ring_reads=*/true));
  if (!StartRingSends(dispatcher, r)) GTEST_SKIP() << "no ring sends with this backend";
  int err = -1;
  char hello[] = "hello, ";
  char world[] = "world";
  iovec iov[2] = {{hello, 7}, {world, 5}};
  EXPECT_EQ(dispatcher.RingWrite(r, iov, 2, &err), 12u);
  EXPECT_EQ(err, 0);
  char buf[32];
  ssize_t n = -1;
  for (int i = 0; i < 100 && n <= 0; ++i) {
    dispatcher.RunOnce(10ms);
    n = ::read(b.get(), buf, sizeof(buf));
  }
  ASSERT_EQ(n, 12);
  EXPECT_EQ(std::string(buf, 12), "hello, world");
  // A peer that stops reading: the queue fills (EAGAIN) behind the socket's buffer.
  const size_t queued = FillSendQueue(dispatcher, r, &err);
  EXPECT_EQ(err, EAGAIN) << "a peer that never reads took " << queued << " bytes";
  const int fd = a.release();
  dispatcher.ForgetAndClose(r, fd);
  dispatcher.RunOnce(0ms);
  EXPECT_NE(::fcntl(fd, F_GETFD), -1) << "closed with sends still going";
  const auto took = RunUntilClosed(dispatcher, fd, 100ms);
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "still open 15 s after the close";
  EXPECT_LT(took, 12s);
}

// A large write takes the bytes queued before it in the same turn along, in one sendmsg(2),
// before the loop turns: the peer can read both at once, in order.
TEST_P(DispatcherTest, ALargeRingWriteSendsTheQueuedBytesFirstAtOnce) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r, /*ring_reads=*/true));
  if (!StartRingSends(dispatcher, r)) GTEST_SKIP() << "no ring sends with this backend";
  int err = -1;
  std::string small(100, 's');
  std::string large(20000, 'L');
  iovec one{small.data(), small.size()};
  ASSERT_EQ(dispatcher.RingWrite(r, &one, 1, &err), small.size());
  char probe;
  EXPECT_EQ(::recv(b.get(), &probe, 1, MSG_PEEK | MSG_DONTWAIT), -1)
      << "a small write went at once";
  iovec two{large.data(), large.size()};
  ASSERT_EQ(dispatcher.RingWrite(r, &two, 1, &err), large.size());
  std::string got(small.size() + large.size(), '\0');
  size_t have = 0;
  while (have < got.size()) {  // no RunOnce: the bytes went with the write
    const ssize_t n = ::recv(b.get(), got.data() + have, got.size() - have, MSG_DONTWAIT);
    ASSERT_GT(n, 0) << "only " << have << " bytes went with the write";
    have += static_cast<size_t>(n);
  }
  EXPECT_EQ(got, small + large);
  dispatcher.RunOnce(0ms);  // nothing else goes out
  EXPECT_EQ(::recv(b.get(), &probe, 1, MSG_DONTWAIT), -1);
  dispatcher.Forget(r);
}

// As close(2) of a socket with unread input: the sends still queued are dropped and the
// descriptor closes at once, without the linger (a peer that floods us without reading gets
// no grace to fill our receive buffer).
TEST_P(DispatcherTest, ACloseWithUnreadInputDropsTheQueuedSendsAtOnce) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r, /*ring_reads=*/true));
  if (!StartRingSends(dispatcher, r)) GTEST_SKIP() << "no ring sends with this backend";
  int err = -1;
  FillSendQueue(dispatcher, r, &err);
  ASSERT_EQ(err, EAGAIN);
  // The peer writes; the handler does not read it.
  ASSERT_EQ(::write(b.get(), "unread", 6), 6);
  for (int i = 0; i < 100 && (r.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  ASSERT_NE(r.seen & EPOLLIN, 0u);
  const int fd = a.release();
  dispatcher.ForgetAndClose(r, fd);
  const auto took = RunUntilClosed(dispatcher, fd, 10ms);
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "still open 15 s after the close";
  EXPECT_LT(took, 2s) << "lingered with unread input";
}

// ---- listeners (Accept; with io_uring, the ring accepts) ----

// A non-blocking listening socket on 127.0.0.1; *port is its port.
UniqueFd ListenSocket(uint16_t* port) {
  return UniqueFd(testing::ListenLoopback(port, SOCK_NONBLOCK, SOMAXCONN));
}

UniqueFd Connect(uint16_t port) { return UniqueFd(testing::ConnectLoopback(port)); }

uint16_t LocalPortOf(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  return ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 ? ntohs(addr.sin_port)
                                                                          : 0;
}

uint16_t PeerPortOf(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  return ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 ? ntohs(addr.sin_port)
                                                                          : 0;
}

// Accepts with `room` until `want` connections came or 2 s passed, turning the loop (as the
// accept loop does: Accept until EAGAIN, then wait for EPOLLIN).
std::vector<UniqueFd> AcceptSome(Dispatcher& d, Readable& l, int fd, uint32_t room, size_t want) {
  std::vector<UniqueFd> got;
  const auto until = std::chrono::steady_clock::now() + 2s;
  while (got.size() < want && std::chrono::steady_clock::now() < until) {
    int err = 0;
    const int c = d.Accept(l, fd, room, &err);
    if (c >= 0) {
      got.emplace_back(c);
      continue;
    }
    EXPECT_EQ(err, EAGAIN);
    d.RunOnce(10ms);
  }
  return got;
}

// A listening socket watched with WatchListener.
struct Listening {
  explicit Listening(Dispatcher& d) : fd(ListenSocket(&port)) {
    watched = fd && d.WatchListener(fd.get(), events);
  }
  uint16_t port = 0;
  UniqueFd fd;
  Readable events;
  bool watched = false;
};

// Accepts and closes what the kernel still queues on `listen_fd`; returns how many.
int TakeQueued(int listen_fd) {
  int n = 0;
  for (int fd; (fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0; ++n) ::close(fd);
  return n;
}

// Whatever the backend, every connection queued on a listener comes out of Accept once,
// non-blocking and close-on-exec, and then EAGAIN until the next one.
TEST_P(DispatcherTest, AListenerHandsOutEveryConnectionOnce) {
  Dispatcher dispatcher(RealTime(), GetParam());
  Listening l(dispatcher);
  ASSERT_TRUE(l.watched);
  if (GetParam() == IoBackend::kEpoll) {
    EXPECT_FALSE(l.events.ring_accepts()) << "the epoll backend has no ring accepts";
  }
  std::vector<UniqueFd> clients;
  std::vector<uint16_t> ports;
  for (int i = 0; i < 10; ++i) {
    clients.push_back(Connect(l.port));
    ASSERT_TRUE(clients.back());
    ports.push_back(LocalPortOf(clients.back().get()));
  }
  std::vector<UniqueFd> accepted = AcceptSome(dispatcher, l.events, l.fd.get(), UINT32_MAX, 10);
  ASSERT_EQ(accepted.size(), 10u);
  for (int i = 0; i < 5; ++i) dispatcher.RunOnce(10ms);
  int err = 0;
  EXPECT_EQ(dispatcher.Accept(l.events, l.fd.get(), UINT32_MAX, &err), -1) << "one came twice";
  EXPECT_EQ(err, EAGAIN);
  std::vector<uint16_t> peers;
  for (const UniqueFd& c : accepted) {
    EXPECT_NE(::fcntl(c.get(), F_GETFL) & O_NONBLOCK, 0) << "accepted blocking";
    EXPECT_NE(::fcntl(c.get(), F_GETFD) & FD_CLOEXEC, 0) << "accepted without close-on-exec";
    peers.push_back(PeerPortOf(c.get()));
  }
  std::sort(ports.begin(), ports.end());
  std::sort(peers.begin(), peers.end());
  EXPECT_EQ(peers, ports);
  // One more, after the loop went back to waiting: EPOLLIN, then it comes out too.
  l.events.seen = 0;
  clients.push_back(Connect(l.port));
  for (int i = 0; i < 100 && (l.events.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  EXPECT_NE(l.events.seen & EPOLLIN, 0u) << "no wake-up for a new connection";
  EXPECT_EQ(AcceptSome(dispatcher, l.events, l.fd.get(), UINT32_MAX, 1).size(), 1u);
  dispatcher.Forget(l.events);
}

// With room for a whole listen queue, the ring takes every queued connection at once (the
// kernel's queue is empty after one turn); with less, it takes one per Accept, and the rest
// wait in the kernel's queue, so a connection cap holds.
TEST_P(DispatcherTest, TheRingAcceptsNoMoreThanTheRoomItIsGiven) {
  Dispatcher dispatcher(RealTime(), GetParam());
  Listening l(dispatcher);
  ASSERT_TRUE(l.watched);
  if (!l.events.ring_accepts()) {
    dispatcher.Forget(l.events);
    GTEST_SKIP() << "no ring accepts with this backend";
  }
  std::vector<UniqueFd> clients;
  // Little room: one connection per Accept, the rest stay queued in the kernel.
  for (int i = 0; i < 4; ++i) clients.push_back(Connect(l.port));
  std::vector<UniqueFd> first = AcceptSome(dispatcher, l.events, l.fd.get(), 1, 1);
  ASSERT_EQ(first.size(), 1u);
  for (int i = 0; i < 5; ++i) dispatcher.RunOnce(10ms);
  EXPECT_EQ(TakeQueued(l.fd.get()), 3) << "the ring took connections it had no room for";
  // Room for a whole queue: one Accept arms a multishot accept, which empties the queue.
  int err = 0;
  EXPECT_EQ(dispatcher.Accept(l.events, l.fd.get(), UINT32_MAX, &err), -1);
  EXPECT_EQ(err, EAGAIN);
  for (int i = 0; i < 4; ++i) clients.push_back(Connect(l.port));
  for (int i = 0; i < 5; ++i) dispatcher.RunOnce(10ms);
  EXPECT_EQ(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC), -1)
      << "the multishot accept left connections in the kernel's queue";
  EXPECT_EQ(AcceptSome(dispatcher, l.events, l.fd.get(), UINT32_MAX, 4).size(), 4u);
  // Room shrinks: the multishot accept ends, connections wait in the kernel again.
  EXPECT_EQ(dispatcher.Accept(l.events, l.fd.get(), 1, &err), -1);
  for (int i = 0; i < 5; ++i) dispatcher.RunOnce(10ms);
  for (int i = 0; i < 3; ++i) clients.push_back(Connect(l.port));
  for (int i = 0; i < 5; ++i) dispatcher.RunOnce(10ms);
  EXPECT_EQ(AcceptSome(dispatcher, l.events, l.fd.get(), 1, 1).size(), 1u);
  EXPECT_EQ(TakeQueued(l.fd.get()), 2) << "the multishot accept went on after the room shrank";
  dispatcher.Forget(l.events);
}

// Connections the ring accepted that nobody took are closed with the listener: their
// clients see the end, and no descriptor stays open.
TEST_P(DispatcherTest, ConnectionsAcceptedButNotTakenCloseWithTheListener) {
  Dispatcher dispatcher(RealTime(), GetParam());
  Listening l(dispatcher);
  ASSERT_TRUE(l.watched);
  int err = 0;
  EXPECT_EQ(dispatcher.Accept(l.events, l.fd.get(), UINT32_MAX, &err), -1);
  UniqueFd client = Connect(l.port);
  ASSERT_TRUE(client);
  for (int i = 0; i < 100 && (l.events.seen & EPOLLIN) == 0; ++i) dispatcher.RunOnce(10ms);
  ASSERT_NE(l.events.seen & EPOLLIN, 0u);
  dispatcher.Forget(l.events);
  l.fd.reset();
  dispatcher.RunOnce(0ms);
  timeval tv{2, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char byte;
  const ssize_t n = ::read(client.get(), &byte, 1);
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET))
      << "the client's connection stayed open (read: " << n << ", " << std::strerror(errno) << ")";
}

TEST_P(DispatcherTest, ShutdownAbandonsWhatWaits) {
  Dispatcher dispatcher(RealTime(), GetParam());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(a && b);
  Readable r;
  ASSERT_TRUE(dispatcher.Watch(a.get(), r));
  dispatcher.Shutdown();
  EXPECT_TRUE(r.abandoned);
}

struct Tracked final : DeferredDeletable {
  explicit Tracked(bool* d) : deleted(d) {}
  ~Tracked() override { *deleted = true; }
  bool* deleted;
};

TEST_P(DispatcherTest, DeferredDeletionWaitsForTheEndOfTheTurn) {
  Dispatcher dispatcher(RealTime(), GetParam());
  bool deleted = false;
  bool seen_alive = false;
  dispatcher.Post([&] {
    dispatcher.DeferDelete(std::make_unique<Tracked>(&deleted));
    seen_alive = !deleted;
  });
  dispatcher.RunOnce(0ms);
  EXPECT_TRUE(seen_alive);
  EXPECT_TRUE(deleted);
}

TEST_P(DispatcherTest, SpawnRunsACoroutineThatYieldsAndReportsItsEnd) {
  Dispatcher dispatcher(RealTime(), GetParam());
  std::vector<std::string> steps;
  bool done = false;
  auto coroutine = [&]() -> net::awaitable<void> {
    steps.push_back("start");
    co_await dispatcher.Yield();
    steps.push_back("after yield");
  };
  dispatcher.Spawn(coroutine(), "test", [&] { done = true; });
  dispatcher.Post([&] { steps.push_back("post"); });
  for (int i = 0; i < 10 && !done; ++i) dispatcher.RunOnce(0ms);
  ASSERT_TRUE(done);
  EXPECT_EQ(steps, (std::vector<std::string>{"start", "post", "after yield"}));
}

TEST_P(DispatcherTest, ShutdownDoesNotReportTheEndOfADestroyedCoroutine) {
  bool done = false;
  bool destroyed = false;
  struct Flag {
    bool* destroyed;
    ~Flag() { *destroyed = true; }
  };
  {
    Dispatcher dispatcher(RealTime(), GetParam());
    Parked parked(dispatcher);
    auto coroutine = [&]() -> net::awaitable<void> {
      Flag f{&destroyed};
      co_await parked.Wait();  // never resumed
    };
    dispatcher.Spawn(coroutine(), "test", [&] { done = true; });
    dispatcher.RunOnce(0ms);
    EXPECT_TRUE(parked.parked());
    dispatcher.Shutdown();
  }
  EXPECT_TRUE(destroyed);
  EXPECT_FALSE(done);
}

}  // namespace
}  // namespace onedomain::dataplane
