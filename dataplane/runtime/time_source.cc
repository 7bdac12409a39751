#include "dataplane/runtime/time_source.h"

namespace onedomain::dataplane {
namespace {

class SteadyTime final : public TimeSource {
 public:
  Clock::time_point Now() const override { return Clock::now(); }
};

}  // namespace

TimeSource& RealTime() {
  static SteadyTime time;
  return time;
}

}  // namespace onedomain::dataplane
