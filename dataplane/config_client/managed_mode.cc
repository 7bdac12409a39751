#include "dataplane/config_client/managed_mode.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include "common/config/snapshot_hash.h"
#include "common/config/validation.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/config_client/config_client.h"
#include "dataplane/server/dataplane_server.h"
#include "google/protobuf/util/time_util.h"

namespace onedomain::dataplane {

v1::MetricsReport BuildMetricsReport(const CountersSnapshot& counters) {
  v1::MetricsReport r;
  *r.mutable_start_time() = google::protobuf::util::TimeUtil::TimeTToTimestamp(
      std::chrono::system_clock::to_time_t(counters.start_time));
  r.set_config_version(counters.config_version);
  const stats::CounterTotals& t = counters.totals;
  r.set_downstream_connections_active(t.downstream_connections_active);
  r.set_downstream_connections_total(t.downstream_connections_total);
  r.set_websocket_connections_active(t.websocket_connections_active);
  for (const auto& [result, n] : t.websocket_upgrades)
    (*r.mutable_websocket_upgrades())[result] = n;
  for (const auto& [key, n] : t.http_requests) (*r.mutable_http_requests())[key] = n;
  r.set_bytes_received(t.bytes_received);
  r.set_bytes_sent(t.bytes_sent);
  r.set_upstream_connect_failures(t.upstream_connect_failures);
  r.set_websocket_closes_abnormal(t.websocket_closes_abnormal);
  return r;
}

absl::StatusOr<std::unique_ptr<ConfigClient>> StartManagedMode(
    DataplaneServer& server, const v1::DataplaneBootstrap& bootstrap) {
  if (!bootstrap.has_controlplane()) return std::unique_ptr<ConfigClient>();
  const v1::ControlPlaneSource& source = bootstrap.controlplane();

  // A cache that exists but cannot be used is state lost without a word otherwise: the node
  // boots from an older config. Logged, and counted by reason.
  auto& cache_errors = prometheus::BuildCounter()
                           .Name("onedomain_config_cache_errors_total")
                           .Help(
                               "Snapshot cache files found unusable at start, by reason: "
                               "empty (0 bytes), unreadable, not_applied.")
                           .Register(server.registry());
  for (const char* reason : {"empty", "unreadable", "not_applied"}) {
    cache_errors.Add({{"reason", reason}});
  }

  // The hash of what the node serves at start, reported in Hello.
  std::string serving_hash;
  if (bootstrap.has_snapshot() && bootstrap.snapshot().version() == server.active_version()) {
    serving_hash = config::SnapshotHash(bootstrap.snapshot());
  }

  // The cache holds the last snapshot this node accepted from the control plane: serve it
  // while the control plane is away, unless what already runs (the bootstrap's) is newer.
  if (const std::string path = ConfigClient::CachePath(source); !path.empty()) {
    auto cached = ConfigClient::LoadCache(path);
    if (cached.ok() && cached->version() > server.active_version()) {
      const uint64_t version = cached->version();
      std::string hash = config::SnapshotHash(*cached);
      if (absl::Status s =
              server.ApplySnapshot(std::make_shared<const v1::Snapshot>(std::move(*cached)));
          s.ok()) {
        serving_hash = std::move(hash);
        log::Info("managed", str::Cat("serving cached version ", version, " from ", path,
                                      " until the control plane answers"));
      } else {
        cache_errors.Add({{"reason", "not_applied"}}).Increment();
        log::Warn("managed", str::Cat("cached snapshot ", path, " not applied: ", s.message()));
      }
    } else if (!cached.ok() && cached.status().code() != absl::StatusCode::kNotFound) {
      const bool empty = cached.status().message().find("empty") != absl::string_view::npos;
      cache_errors.Add({{"reason", empty ? "empty" : "unreadable"}}).Increment();
      log::Warn("managed", str::Cat(cached.status().message(),
                                    "; starting without it (from the bootstrap file's snapshot, "
                                    "if any) until the control plane answers"));
    }
  }

  v1::Node node = bootstrap.node();
  if (node.id().empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    node.set_id(host);
  }
  ConfigClient::Callbacks callbacks;
  callbacks.apply = [&server](std::shared_ptr<const v1::Snapshot> snapshot) {
    return server.ApplySnapshot(std::move(snapshot));
  };
  callbacks.report = [&server] { return BuildMetricsReport(server.SnapshotCounters()); };
  callbacks.connected = [&server](bool connected) { server.SetControlPlaneConnected(connected); };
  auto client = std::make_unique<ConfigClient>(source, node, server.active_version(),
                                               std::move(callbacks), std::move(serving_hash));
  client->Start();
  log::Info("managed",
            str::Cat("node ", node.id(), " following the control plane at ", source.address()));
  return client;
}

}  // namespace onedomain::dataplane
