#pragma once

// glibc's per-thread cache (tcache) keeps 7 free chunks per size: a worker serving a thousand
// HTTP/2 streams at once frees and allocates in bursts far larger than that, so most of its
// allocations fell through to the arena's bins (malloc and free were ~20% of a worker's CPU on
// bench/h2). The cache's depth is a glibc tunable, read only when a process starts, so the
// node sets it for itself: before anything else, main re-executes the binary once with
// glibc.malloc.tcache_count added to GLIBC_TUNABLES (and ONEDOMAIN_MALLOC_TUNING=applied,
// so that the re-executed process never does it again, whatever glibc shows of the string).
//
// Left alone when the user chose: GLIBC_TUNABLES already names tcache_count, LD_PRELOAD is set
// (another allocator, valgrind, heaptrack), or ONEDOMAIN_MALLOC_TUNING=off.

#include <string>

namespace onedomain::dataplane {

// The depth the node asks for.
inline constexpr int kTcacheCount = 1024;

// Re-executes the process with the tunable when it applies; returns (without re-executing)
// when it does not or the exec failed. Call first thing in main, before any thread exists.
void ApplyMallocTuning(char** argv);

// For the startup log: what was done and why.
std::string MallocTuningSummary();

}  // namespace onedomain::dataplane
