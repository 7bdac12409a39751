#pragma once

// Managed mode: the data plane follows a control plane. Boots from the on-disk cache of the
// last accepted snapshot (when the bootstrap file's own snapshot is absent or older), then
// starts the ConfigClient, whose pushes go through DataplaneServer::ApplySnapshot — the same
// path as a SIGHUP reload — and whose reports come from the server's counters.

#include <memory>

#include "absl/status/statusor.h"

namespace onedomain::v1 {
class DataplaneBootstrap;
class MetricsReport;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

class ConfigClient;
class DataplaneServer;
struct CountersSnapshot;

// Call after server.Start(). Returns the running client (stop it, or let it go out of
// scope, before the server is destroyed), or null in static mode.
absl::StatusOr<std::unique_ptr<ConfigClient>> StartManagedMode(
    DataplaneServer& server, const v1::DataplaneBootstrap& bootstrap);

// The MetricsReport a node sends for its counters.
v1::MetricsReport BuildMetricsReport(const CountersSnapshot& counters);

}  // namespace onedomain::dataplane
