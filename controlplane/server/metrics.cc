#include "controlplane/server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>

namespace onedomain::controlplane {
namespace {

prometheus::Histogram::BucketBoundaries StoreBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
}

}  // namespace

ControlplaneMetrics::ControlplaneMetrics(prometheus::Registry& registry)
    : admin_requests_(prometheus::BuildCounter()
                          .Name("onedomain_admin_requests_total")
                          .Help("Admin RPCs by method and gRPC status code.")
                          .Register(registry)),
      push_seconds_(prometheus::BuildHistogram()
                        .Name("onedomain_config_push_seconds")
                        .Help("Time from a commit to every connected node having answered it "
                              "(ACK or NACK).")
                        .Register(registry)
                        .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01,
                                                                         0.025, 0.05, 0.1, 0.2, 0.5,
                                                                         1, 2.5, 5, 10})),
      latest_version_(prometheus::BuildGauge()
                          .Name("onedomain_config_latest_version")
                          .Help("Newest committed snapshot version.")
                          .Register(registry)
                          .Add({})),
      node_streams_refused_(prometheus::BuildCounter()
                                .Name("onedomain_node_streams_refused_total")
                                .Help("Config streams refused, by gRPC status code "
                                      "(UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, "
                                      "RESOURCE_EXHAUSTED).")
                                .Register(registry)),
      state_loss_(prometheus::BuildCounter()
                      .Name("onedomain_store_state_loss_total")
                      .Help("State the store found lost, by kind: audit_log_empty, "
                            "audit_log_missing, audit_record_unreadable, "
                            "restored_below_high_water_mark, node_ahead_of_store.")
                      .Register(registry)),
      store_up_(prometheus::BuildGauge()
                    .Name("onedomain_store_up")
                    .Help("1 while the store answers (etcd reachable; always 1 for the file "
                          "store), else 0: nodes keep their version, writes are refused.")
                    .Register(registry)
                    .Add({})),
      store_request_seconds_(prometheus::BuildHistogram()
                                 .Name("onedomain_store_request_seconds")
                                 .Help("Duration of store (etcd) requests by operation, "
                                       "failed ones included.")
                                 .Register(registry)),
      leader_(prometheus::BuildGauge()
                  .Name("onedomain_controlplane_leader")
                  .Help("1 while this replica holds the etcd leadership for singleton work "
                        "(pruning old versions); 0 otherwise and with the file store.")
                  .Register(registry)
                  .Add({})),
      replicas_(prometheus::BuildGauge()
                    .Name("onedomain_controlplane_replicas")
                    .Help("Live control-plane replicas (registered under etcd leases), this "
                          "one included; 1 with the file store.")
                    .Register(registry)
                    .Add({})),
      cluster_nodes_connected_(prometheus::BuildGauge()
                                   .Name("onedomain_fleet_cluster_nodes_connected")
                                   .Help("Connected nodes over every control-plane replica "
                                         "(the same on each replica).")
                                   .Register(registry)
                                   .Add({})),
      cluster_nodes_on_latest_(prometheus::BuildGauge()
                                   .Name("onedomain_fleet_cluster_nodes_on_latest_version")
                                   .Help("Connected nodes over every replica that acknowledged "
                                         "the newest committed version.")
                                   .Register(registry)
                                   .Add({})) {
  for (const char* op :
       {"refresh", "get", "commit", "history", "raise_floor", "lease", "register", "prune"}) {
    store_request_seconds_.Add({{"op", op}}, StoreBuckets());
  }
  for (const char* code :
       {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}) {
    node_streams_refused_.Add({{"code", code}});
  }
  for (const char* kind : {"audit_log_empty", "audit_log_missing", "audit_record_unreadable",
                           "restored_below_high_water_mark", "node_ahead_of_store"}) {
    state_loss_.Add({{"kind", kind}});
  }
}

void ControlplaneMetrics::CountAdminRequest(std::string_view method, std::string_view code) {
  admin_requests_.Add({{"method", std::string(method)}, {"code", std::string(code)}}).Increment();
}

void ControlplaneMetrics::ObservePush(double seconds) { push_seconds_.Observe(seconds); }

void ControlplaneMetrics::CountNodeStreamRefused(std::string_view code) {
  node_streams_refused_.Add({{"code", std::string(code)}}).Increment();
}

void ControlplaneMetrics::CountStateLoss(std::string_view kind, double n) {
  state_loss_.Add({{"kind", std::string(kind)}}).Increment(n);
}

void ControlplaneMetrics::SetLatestVersion(unsigned long long version) {
  latest_version_.Set(static_cast<double>(version));
}

}  // namespace onedomain::controlplane

namespace onedomain::controlplane {

void ControlplaneMetrics::SetStoreUp(bool up) { store_up_.Set(up ? 1 : 0); }

void ControlplaneMetrics::ObserveStoreRequest(std::string_view op, double seconds) {
  store_request_seconds_.Add({{"op", std::string(op)}}, StoreBuckets()).Observe(seconds);
}

}  // namespace onedomain::controlplane

namespace onedomain::controlplane {

void ControlplaneMetrics::SetLeader(bool leader) { leader_.Set(leader ? 1 : 0); }

void ControlplaneMetrics::SetClusterView(double replicas, double nodes_connected,
                                         double nodes_on_latest) {
  replicas_.Set(replicas);
  cluster_nodes_connected_.Set(nodes_connected);
  cluster_nodes_on_latest_.Set(nodes_on_latest);
}

}  // namespace onedomain::controlplane
