#include "dataplane/server/allocator.h"

#include <dlfcn.h>
#include <malloc.h>

#include "common/strings/strings.h"

namespace onedomain::dataplane {

std::string AllocatorSummary() {
  // gperftools' version call: "gperftools 2.10".
  using TcVersion = const char* (*)(int* major, int* minor, const char** patch);
  if (void* fn = ::dlsym(RTLD_DEFAULT, "tc_version"); fn != nullptr) {
    int major = 0;
    int minor = 0;
    const char* patch = nullptr;
    const char* version = reinterpret_cast<TcVersion>(fn)(&major, &minor, &patch);
    return str::Cat("malloc: tcmalloc (", version != nullptr ? version : "unknown version", ")");
  }
  if (::dlsym(RTLD_DEFAULT, "mallctl") != nullptr) return "malloc: jemalloc";
  return "malloc: the C library's";
}

namespace {

// Looked up, not linked: builds without tcmalloc (sanitizers, ONEDOMAIN_ALLOCATOR=glibc) have
// no such symbols.
void CallIfPresent(const char* symbol) {
  using Fn = void (*)();
  if (void* fn = ::dlsym(RTLD_DEFAULT, symbol); fn != nullptr) reinterpret_cast<Fn>(fn)();
}

}  // namespace

void ReleaseThreadCache() { CallIfPresent("MallocExtension_MarkThreadIdle"); }

size_t FreeHeapBytes() {
  using GetProperty = int (*)(const char* property, size_t* value);
  if (void* fn = ::dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty"); fn != nullptr) {
    const auto get = [fn](const char* property) {
      size_t value = 0;
      return reinterpret_cast<GetProperty>(fn)(property, &value) != 0 ? value : 0;
    };
    // Everything mapped and not allocated: the free pages, and the freed objects in the
    // thread, transfer and central caches (a burst's buffers often still sit in those).
    const size_t mapped = get("generic.heap_size") - get("tcmalloc.pageheap_unmapped_bytes");
    const size_t allocated = get("generic.current_allocated_bytes");
    return mapped > allocated ? mapped - allocated : 0;
  }
  return ::mallinfo2().fordblks;
}

void ReturnFreeMemoryToSystem() {
  CallIfPresent("MallocExtension_ReleaseFreeMemory");
  // The C library's heap too: with tcmalloc it holds only what was allocated before tcmalloc
  // took over, and trimming it is cheap.
  ::malloc_trim(0);
}

}  // namespace onedomain::dataplane
