#pragma once

// The data plane process: workers, listeners, the admin endpoints, metrics, signals, and the
// one path by which configuration changes (ApplySnapshot) — used by SIGHUP reloads in static
// mode and by the control-plane client.
//
// Threads: a control thread (the one calling Run) owns timers (drain, DNS refresh, TLS file
// watch) and receives signals; workers serve traffic; the admin server has its own thread.
// Public methods are thread-safe unless noted; none may be called from a worker thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dataplane/stats/dataplane_stats.h"
#include "onedomain/v1/bootstrap.pb.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace onedomain::dataplane {

struct CompiledSnapshot;

struct ServerOptions {
  v1::DataplaneBootstrap bootstrap;  // loaded and validated
  std::string config_path;           // re-read on SIGHUP (static mode)
  size_t workers = 1;                // resolved: --workers, bootstrap.workers, or cores
  // --io, else $ONEDOMAIN_WORKER_IO, else bootstrap.worker_io: auto, epoll or io_uring.
  std::string worker_io = "auto";
  std::string port_file;  // empty: none
};

// Cumulative counters for the control plane's MetricsReport.
struct CountersSnapshot {
  std::chrono::system_clock::time_point start_time;
  uint64_t config_version = 0;
  stats::CounterTotals totals;
};

class DataplaneServer {
 public:
  explicit DataplaneServer(ServerOptions options);
  ~DataplaneServer();
  DataplaneServer(const DataplaneServer&) = delete;
  DataplaneServer& operator=(const DataplaneServer&) = delete;

  // Starts workers and the admin endpoint, applies the bootstrap snapshot, writes the port
  // file, installs signal handling. An error means the process should exit 1.
  absl::Status Start();

  // Runs the control thread until the drain finishes (or a second SIGTERM). Returns the
  // process exit code.
  int Run();

  // Validates `snapshot` (ValidateSnapshot plus node-local checks: TLS files load, listeners
  // bind, features this build lacks), compiles it, posts it to every worker and returns once
  // every worker serves it — an OK is safe to ACK. On error nothing changed and the previous
  // snapshot keeps serving — NACK with the status. Requests in flight finish on the snapshot
  // they started with. Listener changes are applied: new listeners are bound before anything
  // is published, removed ones stop accepting after the switch (their open connections finish
  // their current request). Serialised: concurrent calls apply one after the other.
  absl::Status ApplySnapshot(std::shared_ptr<const v1::Snapshot> snapshot);

  // Version of the snapshot being served (0 before the first, or for hand-written files).
  uint64_t active_version() const;
  bool has_config() const;
  bool ready() const;

  // SIGTERM: readiness false now; after drain.delay the listeners close; in-flight requests
  // finish and idle connections close; Run returns 0 when none is left or at drain.timeout.
  void BeginDrain();
  // SIGHUP in static mode: re-read the bootstrap file and ApplySnapshot its snapshot; a bad
  // file is logged and changes nothing.
  void ReloadFromFile();

  CountersSnapshot SnapshotCounters() const;
  // For metrics owned by others (e.g. onedomain_controlplane_connected is registered here
  // and set by the control-plane client through SetControlPlaneConnected).
  prometheus::Registry& registry();
  void SetControlPlaneConnected(bool connected);

  // The active snapshot as JSON (admin /config_dump); empty before the first one.
  std::string ConfigDumpJson() const;
  std::string MetricsText() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// --check-config: everything ApplySnapshot checks that needs no running server (validation,
// TLS files, unsupported features). DNS names are not resolved.
absl::Status CheckSnapshotForNode(const v1::Snapshot& snapshot);

}  // namespace onedomain::dataplane
