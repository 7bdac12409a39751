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

 private:
  prometheus::Family<prometheus::Counter>& admin_requests_;
  prometheus::Histogram& push_seconds_;
  prometheus::Gauge& latest_version_;
  prometheus::Family<prometheus::Counter>& node_streams_refused_;
  prometheus::Family<prometheus::Counter>& state_loss_;
};

}  // namespace onedomain::controlplane
