#include "dataplane/server/copy_tuning.h"

#include <sys/auxv.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "common/strings/strings.h"

namespace onedomain::dataplane {
namespace {

constexpr std::string_view kTunable = "glibc.cpu.x86_rep_movsb_threshold";
// 1 GiB: above glibc's non-temporal threshold (a share of the L3 cache), so no copy size
// takes rep movsb; copies that large take glibc's non-temporal loop, as before.
constexpr std::string_view kValue = "1073741824";

// Unset; "off" (the operator's opt-out); "applied" (set before the re-exec, so the
// re-executed process never does it again, whatever glibc makes of GLIBC_TUNABLES).
constexpr const char* kState = "ONEDOMAIN_COPY_TUNING";

// Why a wanted re-exec did not happen, for CopySummary.
std::string& ReexecFailure() {
  static std::string failure;
  return failure;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string Tunables() { return Env("GLIBC_TUNABLES"); }

// Whether GLIBC_TUNABLES (`tunables`) sets the tunable, and to what (*value).
bool NamedValue(std::string_view tunables, std::string_view* value) {
  size_t at = 0;
  while (at <= tunables.size()) {
    size_t end = tunables.find(':', at);
    if (end == std::string_view::npos) end = tunables.size();
    const std::string_view item = tunables.substr(at, end - at);
    if (item.size() > kTunable.size() && item.substr(0, kTunable.size()) == kTunable &&
        item[kTunable.size()] == '=') {
      *value = item.substr(kTunable.size() + 1);
      return true;
    }
    at = end + 1;
  }
  return false;
}

bool AmdWithErms() {
#if defined(__x86_64__)
  unsigned eax = 0;
  unsigned ebx = 0;
  unsigned ecx = 0;
  unsigned edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0 || eax < 7) return false;
  char vendor[12];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  if (std::string_view(vendor, sizeof vendor) != "AuthenticAMD") return false;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  return (ebx & (1u << 9)) != 0;  // ERMS: glibc copies with rep movsb
#else
  return false;
#endif
}

}  // namespace

void ReexecForVectorCopies(char** argv) {
#if defined(__GLIBC__)
  // LD_PRELOAD: a tool (valgrind would let the re-executed process run without it,
  // heaptrack) or another allocator is in charge.
  const std::string state = Env(kState);
  if (state == "off" || state == "applied" || !Env("LD_PRELOAD").empty()) return;
  const std::string tunables = Tunables();
  std::string_view value;
  if (NamedValue(tunables, &value) || ::getauxval(AT_SECURE) != 0 || !AmdWithErms()) return;
  const auto restore = [&] {
    if (state.empty()) {
      ::unsetenv(kState);
    } else {
      ::setenv(kState, state.c_str(), 1);
    }
    if (tunables.empty()) {
      ::unsetenv("GLIBC_TUNABLES");
    } else {
      ::setenv("GLIBC_TUNABLES", tunables.c_str(), 1);
    }
  };
  const std::string wanted = str::Cat(tunables, tunables.empty() ? "" : ":", kTunable, "=", kValue);
  if (::setenv("GLIBC_TUNABLES", wanted.c_str(), 1) != 0 || ::setenv(kState, "applied", 1) != 0) {
    const int err = errno;
    restore();
    ReexecFailure() = str::Cat("setenv: ", std::strerror(err));
    return;
  }
  // The binary's own path, not /proc/self/exe: the kernel names the process (comm, what ps
  // and top show) after the file executed, and "exe" would replace "dataplane".
  std::string path = "/proc/self/exe";
  char target[4096];
  const ssize_t n = ::readlink("/proc/self/exe", target, sizeof target);
  if (n > 0 && static_cast<size_t>(n) < sizeof target) {
    const std::string_view real(target, static_cast<size_t>(n));
    if (real.front() == '/' && !real.ends_with(" (deleted)")) path = real;
  }
  ::execv(path.c_str(), argv);  // returns only on failure
  const int err = errno;
  restore();
  ReexecFailure() = str::Cat("re-executing ", path, " failed: ", std::strerror(err));
#else
  (void)argv;
#endif
}

std::string CopySummary() {
  const std::string tunables = Tunables();
  std::string_view value;
  if (NamedValue(tunables, &value)) {
    return str::Cat("memory copies: GLIBC_TUNABLES ", kTunable, "=", value);
  }
  if (Env(kState) == "off") return "memory copies: glibc's defaults (ONEDOMAIN_COPY_TUNING=off)";
  if (!ReexecFailure().empty()) {
    return str::Cat("memory copies: glibc's rep movsb on an AMD CPU (", ReexecFailure(), ")");
  }
  return "memory copies: glibc's defaults";
}

}  // namespace onedomain::dataplane
