#include "dataplane/runtime/sched_slice.h"

#include <linux/sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace onedomain::dataplane {
namespace {

// struct sched_attr of <linux/sched/types.h>, which cannot be included next to glibc's
// headers (both define struct sched_param).
struct sched_attr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
  uint32_t sched_util_min;
  uint32_t sched_util_max;
};
static_assert(sizeof(sched_attr) == 56);  // SCHED_ATTR_SIZE_VER1

// glibc 2.36 (Debian 12) has no wrappers for these two.
int GetAttr(sched_attr* attr) {
  return static_cast<int>(::syscall(SYS_sched_getattr, 0, attr, sizeof(*attr), 0));
}

bool Fair(const sched_attr& attr) {
  return attr.sched_policy == SCHED_NORMAL || attr.sched_policy == SCHED_BATCH;
}

}  // namespace

std::chrono::nanoseconds CurrentSchedulerSlice() {
  sched_attr attr{};
  if (GetAttr(&attr) != 0 || !Fair(attr)) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(attr.sched_runtime);
}

int SetSchedulerSlice(std::chrono::nanoseconds slice) {
  sched_attr attr{};
  if (GetAttr(&attr) != 0) return errno;
  if (!Fair(attr)) return EOPNOTSUPP;
  // What sched_getattr returned, policy and nice included, with the slice changed (a zeroed
  // attr would reset the nice value an operator set). Utilization clamps are left alone
  // unless their flags are passed.
  attr.size = sizeof(attr);
  attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK;
  attr.sched_runtime = static_cast<uint64_t>(slice.count());
  if (::syscall(SYS_sched_setattr, 0, &attr, 0) != 0) return errno;
  return 0;
}

}  // namespace onedomain::dataplane
