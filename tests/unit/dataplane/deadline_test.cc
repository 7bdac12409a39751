#include "dataplane/runtime/deadline.h"

#include <gtest/gtest.h>

namespace onedomain::dataplane {
namespace {

void Count(void* arg) { ++*static_cast<int*>(arg); }

TEST(DeadlineTest, FiresOnlyWhenDueAndKeepsFiringUntilDisarmed) {
  DeadlineList list;
  int cancels = 0;
  Deadline d(list, &Count, &cancels);
  const auto t0 = Clock::now();
  d.ArmAt(t0 + std::chrono::seconds(1));
  EXPECT_EQ(list.Sweep(t0), 0u);
  EXPECT_FALSE(d.fired());
  EXPECT_EQ(list.Sweep(t0 + std::chrono::seconds(1)), 1u);
  EXPECT_TRUE(d.fired());
  EXPECT_EQ(cancels, 1);
  // Still armed past its time: cancels again so a later operation cannot slip through.
  list.Sweep(t0 + std::chrono::seconds(2));
  EXPECT_EQ(cancels, 2);
  d.Disarm();
  EXPECT_TRUE(d.fired());  // the owner may ask why its operation failed after disarming
  list.Sweep(t0 + std::chrono::seconds(3));
  EXPECT_EQ(cancels, 2);
  EXPECT_EQ(list.armed(), 0u);
  d.Arm(std::chrono::hours(1));
  EXPECT_FALSE(d.fired());
}

TEST(DeadlineTest, RearmingClearsFiredAndZeroDisarms) {
  DeadlineList list;
  int cancels = 0;
  Deadline d(list, &Count, &cancels);
  d.ArmAt(Clock::now());
  list.Sweep(Clock::now());
  EXPECT_TRUE(d.fired());
  d.Arm(std::chrono::hours(1));
  EXPECT_FALSE(d.fired());
  EXPECT_TRUE(d.armed());
  d.Arm(std::chrono::seconds(0));  // configs use 0 for "no limit"
  EXPECT_FALSE(d.armed());
}

TEST(DeadlineTest, DestructionUnlinks) {
  DeadlineList list;
  int cancels = 0;
  {
    Deadline a(list, &Count, &cancels);
    Deadline b(list, &Count, &cancels);
    a.ArmAt(Clock::now());
    b.ArmAt(Clock::now());
    EXPECT_EQ(list.armed(), 2u);
  }
  EXPECT_EQ(list.armed(), 0u);
  EXPECT_EQ(list.Sweep(Clock::now()), 0u);
}

}  // namespace
}  // namespace onedomain::dataplane
