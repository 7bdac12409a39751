// The worker threads' scheduler slice (runtime/sched_slice.h): asked for, read back, and
// the thread's nice value kept. Linux 6.12+ only; older kernels skip.

#include "dataplane/runtime/sched_slice.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/worker/worker.h"

namespace onedomain::dataplane {
namespace {

using namespace std::chrono_literals;

bool KernelHasThreadSlices() { return CurrentSchedulerSlice().count() > 0; }

// On a thread of its own: the test process's threads keep the kernel's slice.
template <typename F>
void OnThread(F fn) {
  std::thread t(fn);
  t.join();
}

TEST(SchedSliceTest, ASliceAskedForIsTheThreadsAndTheNiceValueStays) {
  if (!KernelHasThreadSlices()) GTEST_SKIP() << "no per-thread slices before Linux 6.12";
  OnThread([] {
    const auto kernel = CurrentSchedulerSlice();
    // A nice value raised on this thread (allowed without privileges) must survive.
    ASSERT_EQ(::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 3), 0);
    ASSERT_EQ(SetSchedulerSlice(300us), 0);
    EXPECT_EQ(CurrentSchedulerSlice(), 300us);
    EXPECT_EQ(::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid())), 3);
    ASSERT_EQ(SetSchedulerSlice(2ms), 0);
    EXPECT_EQ(CurrentSchedulerSlice(), 2ms);
    EXPECT_NE(kernel, 2ms);
  });
  // Other threads are not touched.
  EXPECT_NE(CurrentSchedulerSlice(), 2ms);
}

TEST(SchedSliceTest, AWorkerThreadRunsWithTheSliceItWasGiven) {
  if (!KernelHasThreadSlices()) GTEST_SKIP() << "no per-thread slices before Linux 6.12";
  stats::StatsCatalog catalog(1);
  Worker worker(0, catalog, nullptr);
  worker.set_scheduler_slice(700us);
  worker.Start();
  std::promise<std::chrono::nanoseconds> slice;
  worker.Post([&] { slice.set_value(CurrentSchedulerSlice()); });
  auto f = slice.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), 700us);
  worker.Stop();
}

}  // namespace
}  // namespace onedomain::dataplane
