#include "dataplane/upstream/outlier_detector.h"

#include <gtest/gtest.h>

namespace onedomain::dataplane {
namespace {

using namespace std::chrono_literals;

TEST(OutlierTest, EjectsAfterConsecutiveFailuresForEjectionTime) {
  OutlierState s;
  const OutlierConfig config{3, 10s};
  const auto t = Clock::now();
  EXPECT_FALSE(s.RecordFailure(config, t));
  EXPECT_FALSE(s.RecordFailure(config, t));
  EXPECT_TRUE(s.Healthy(t));
  EXPECT_TRUE(s.RecordFailure(config, t));
  EXPECT_FALSE(s.Healthy(t + 9s));
  EXPECT_TRUE(s.Healthy(t + 10s));
  // A fresh count after the ejection.
  EXPECT_FALSE(s.RecordFailure(config, t + 10s));
}

TEST(OutlierTest, SuccessResetsTheCount) {
  OutlierState s;
  const OutlierConfig config{2, 10s};
  const auto t = Clock::now();
  s.RecordFailure(config, t);
  s.RecordSuccess();
  EXPECT_FALSE(s.RecordFailure(config, t));
  EXPECT_TRUE(s.Healthy(t));
}

TEST(OutlierTest, ZeroTurnsItOff) {
  OutlierState s;
  const OutlierConfig config{0, 10s};
  const auto t = Clock::now();
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(s.RecordFailure(config, t));
  EXPECT_TRUE(s.Healthy(t));
}

}  // namespace
}  // namespace onedomain::dataplane
