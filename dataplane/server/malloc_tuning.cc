#include "dataplane/server/malloc_tuning.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string_view>

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
  if (Env(kOptOut) == "off" || !Env("LD_PRELOAD").empty()) return;
  const std::string_view tunables = Env("GLIBC_TUNABLES");
  if (tunables.find(kTunable) != std::string_view::npos) return;  // chosen, or done already
  std::string value(tunables);
  if (!value.empty()) value.push_back(':');
  value.append(kTunable).append("=").append(std::to_string(kTcacheCount));
  if (setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: the exec failed (no /proc, say). Run untuned, and say so in the log.
  setenv(kOptOut, "exec-failed", 1);
}

std::string MallocTuningSummary() {
  const std::string_view opt_out = Env(kOptOut);
  if (opt_out == "exec-failed") return "malloc: default tcache (could not re-execute)";
  if (opt_out == "off") return "malloc: default tcache (ONEDOMAIN_MALLOC_TUNING=off)";
  if (!Env("LD_PRELOAD").empty()) return "malloc: untouched (LD_PRELOAD is set)";
  const std::string_view tunables = Env("GLIBC_TUNABLES");
  const size_t at = tunables.find(kTunable);
  if (at == std::string_view::npos) return "malloc: default tcache";
  std::string_view setting = tunables.substr(at);
  setting = setting.substr(0, setting.find(':'));
  return std::string("malloc: ").append(setting);
}

}  // namespace onedomain::dataplane
