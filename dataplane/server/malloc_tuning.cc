#include "dataplane/server/malloc_tuning.h"

#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "common/strings/strings.h"

namespace onedomain::dataplane {
namespace {

constexpr std::string_view kTunable = "glibc.malloc.tcache_count";
constexpr const char* kOptOut = "ONEDOMAIN_MALLOC_TUNING";

std::string_view Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string_view() : std::string_view(v);
}

}  // namespace

void ApplyMallocTuning(char** argv) {
  // "applied": this is the re-executed process; whatever glibc made of the string, never again.
  const std::string_view state = Env(kOptOut);
  if (state == "off" || state == "applied" || !Env("LD_PRELOAD").empty()) return;
  const std::string_view tunables = Env("GLIBC_TUNABLES");
  if (tunables.find(kTunable) != std::string_view::npos) return;  // the user chose
  std::string value(tunables);
  if (!value.empty()) value.push_back(':');
  value.append(kTunable).append("=").append(std::to_string(kTcacheCount));
  if (setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
  setenv(kOptOut, "applied", 1);
  execv("/proc/self/exe", argv);
  // Still here: the exec failed (no /proc, say). Run untuned, and say so in the log.
  setenv(kOptOut, "exec-failed", 1);
}

std::string MallocTuningSummary() {
  const std::string_view state = Env(kOptOut);
  if (state == "applied") return str::Cat("malloc: ", kTunable, "=", kTcacheCount);
  if (state == "exec-failed") return "malloc: default tcache (could not re-execute)";
  if (state == "off") return "malloc: default tcache (ONEDOMAIN_MALLOC_TUNING=off)";
  if (!Env("LD_PRELOAD").empty()) return "malloc: untouched (LD_PRELOAD is set)";
  // The user's own setting, or none.
  const std::string_view tunables = Env("GLIBC_TUNABLES");
  const size_t at = tunables.find(kTunable);
  if (at == std::string_view::npos) return "malloc: default tcache";
  const std::string_view setting = tunables.substr(at);
  return str::Cat("malloc: ", setting.substr(0, setting.find(':')));
}

}  // namespace onedomain::dataplane
