#pragma once

// Turns a validated v1::Snapshot into a CompiledSnapshot: defaults applied (common/config/
// defaults.h), node-local resources loaded (TLS files; DNS names resolved once), clusters
// that did not change since `previous` reused as the same objects (workers keep their pools
// and outlier state), stats slots registered. Runs on the applying thread, never a worker.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "dataplane/worker/compiled_snapshot.h"

namespace onedomain::v1 {
class Snapshot;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

namespace stats {
class StatsCatalog;
}  // namespace stats

struct CompileOptions {
  // Registers route and cluster names for metrics; null in --check-config.
  stats::StatsCatalog* catalog = nullptr;
  // Resolve DNS names now (blocking). Off for --check-config: a name that does not resolve
  // yet is not a config error (a Kubernetes Service may come up later).
  bool resolve_dns = true;
  // Slot of each listener by name (ListenerSet); unset: all 0.
  std::function<uint32_t(const std::string& name)> listener_slot;
};

// Errors name the field path ("listeners[0].tls: cannot load certificate chain ...").
absl::StatusOr<std::shared_ptr<CompiledSnapshot>> CompileSnapshot(
    std::shared_ptr<const v1::Snapshot> snapshot, const CompiledSnapshot* previous,
    const CompileOptions& options);

// The listener's TLS settings compiled again from its files (certificate rotation).
absl::StatusOr<std::shared_ptr<CompiledListener>> ReloadListenerTls(const CompiledListener& l);

// Every address `host` resolves to (blocking), or an empty list with a warning logged.
std::vector<boost::asio::ip::tcp::endpoint> ResolveNow(const std::string& host, uint16_t port);

}  // namespace onedomain::dataplane
