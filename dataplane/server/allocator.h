#pragma once

// Which malloc the node runs on, for the startup log. The build links gperftools' tcmalloc
// (ONEDOMAIN_ALLOCATOR, the top-level CMakeLists.txt); sanitizer builds, ONEDOMAIN_ALLOCATOR=glibc
// and LD_PRELOAD (another allocator, heaptrack) change that, so the answer is looked up in the
// running process rather than assumed.

#include <cstddef>
#include <string>

namespace onedomain::dataplane {

// "malloc: tcmalloc (gperftools 2.10)", "malloc: jemalloc" or "malloc: the C library's".
std::string AllocatorSummary();

// Moves the calling thread's cache of free memory to the shared free lists (tcmalloc keeps
// up to a few MiB per thread); nothing with glibc. Each worker calls it for itself.
void ReleaseThreadCache();

// Free memory the allocator holds, some of which ReturnFreeMemoryToSystem could hand back
// (tcmalloc: mapped and not allocated, caches included; glibc: free arena bytes). Cheap
// enough for a periodic check.
size_t FreeHeapBytes();

// Hands the free memory the allocator holds back to the system (tcmalloc's
// MallocExtension_ReleaseFreeMemory, glibc's malloc_trim). Slow: for after a flood of
// connections, not for a request path.
void ReturnFreeMemoryToSystem();

}  // namespace onedomain::dataplane
