#pragma once

// The kernel scheduler's time slice for a worker thread. Linux 6.12 and later (EEVDF) let a
// SCHED_OTHER thread ask for its own slice, 0.1 to 100 ms, through sched_setattr's
// sched_runtime; the default is 0.7 ms times 1 + log2(cores), 1.4 ms on two cores. A shorter
// slice changes when the thread runs, not how much: the scheduler picks it sooner after a
// wake-up or a sched_yield, and preempts it sooner, for the same share of the CPU.
//
// Thread: both act on the calling thread.

#include <chrono>

namespace onedomain::dataplane {

// The calling thread's slice as the kernel reports it (sched_getattr), or 0 when the kernel
// has no per-thread slices (before Linux 6.12) or the thread is not SCHED_OTHER/SCHED_BATCH.
std::chrono::nanoseconds CurrentSchedulerSlice();

// Asks for `slice` (the kernel clamps it to 0.1-100 ms), keeping the thread's policy and nice
// value. Returns 0, or the errno of sched_getattr/sched_setattr; EOPNOTSUPP when the thread
// is not SCHED_OTHER/SCHED_BATCH (a real-time policy set by the operator is left alone).
int SetSchedulerSlice(std::chrono::nanoseconds slice);

}  // namespace onedomain::dataplane
