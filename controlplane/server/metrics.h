#pragma once

// The control plane's own metrics (admin requests, push latency, latest version), registered
// at start-up. The fleet's per-node series come from FleetCollector at scrape time.

#include <string_view>

namespace prometheus {
class Registry;
class Histogram;
class Gauge;
class Counter;
template <typename T>
class Family;
}  // namespace prometheus

namespace onedomain::controlplane {

class ControlplaneMetrics {
 public:
  explicit ControlplaneMetrics(prometheus::Registry& registry);

  // `code` is the gRPC status code name, e.g. "OK", "UNAUTHENTICATED".
  void CountAdminRequest(std::string_view method, std::string_view code);
  void ObservePush(double seconds);
  void SetLatestVersion(unsigned long long version);
  // A node stream refused before or at its Hello; `code` as above.
  void CountNodeStreamRefused(std::string_view code);
  // State the store noticed it had lost (FileStore::state_loss kinds).
  void CountStateLoss(std::string_view kind, double n = 1);
  // The store answers (etcd reachable; always 1 for the file store).
  void SetStoreUp(bool up);
  // One store request (`op`: refresh, get, commit, history, ...), successful or not.
  void ObserveStoreRequest(std::string_view op, double seconds);
  // This replica holds the leadership for singleton work (etcd election).
  void SetLeader(bool leader);
  // The fleet across every live replica (etcd store), refreshed at scrape time.
  void SetClusterView(double replicas, double nodes_connected, double nodes_on_latest);

 private:
  prometheus::Family<prometheus::Counter>& admin_requests_;
  prometheus::Histogram& push_seconds_;
  prometheus::Gauge& latest_version_;
  prometheus::Family<prometheus::Counter>& node_streams_refused_;
  prometheus::Family<prometheus::Counter>& state_loss_;
  prometheus::Gauge& store_up_;
  prometheus::Family<prometheus::Histogram>& store_request_seconds_;
  prometheus::Gauge& leader_;
  prometheus::Gauge& replicas_;
  prometheus::Gauge& cluster_nodes_connected_;
  prometheus::Gauge& cluster_nodes_on_latest_;
};

}  // namespace onedomain::controlplane
