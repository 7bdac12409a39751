#pragma once

// A cluster as one worker runs it: the hosts its endpoints resolve to (each with a pool and
// outlier state) and the balancer's cursor. Created when a snapshot introduces or changes a
// cluster; kept across snapshots that leave the cluster unchanged. Requests in flight hold a
// Ref, so a replaced runtime lives until they finish.
//
// Thread: one worker.

#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <span>
#include <vector>

#include "dataplane/runtime/ref.h"
#include "dataplane/upstream/cluster_config.h"
#include "dataplane/upstream/host.h"
#include "dataplane/upstream/load_balancer.h"

namespace onedomain::dataplane {

class ClusterRuntime : public WorkerRefCounted<ClusterRuntime> {
 public:
  ClusterRuntime(std::shared_ptr<const CompiledCluster> def, stats::ClusterCounters* counters);
  ~ClusterRuntime();
  ClusterRuntime(const ClusterRuntime&) = delete;
  ClusterRuntime& operator=(const ClusterRuntime&) = delete;

  const CompiledCluster& def() const { return *def_; }
  const std::shared_ptr<const CompiledCluster>& def_ptr() const { return def_; }
  stats::ClusterCounters* counters() const { return counters_; }

  // Replaces the addresses of endpoint `index` (a DNS refresh). Hosts whose address stays
  // keep their pools and outlier state; dropped ones are retired.
  void SetAddresses(size_t index, const std::vector<boost::asio::ip::tcp::endpoint>& addresses);

  // A healthy host (see LoadBalancer; below the panic threshold, any host), or null.
  Host* Pick(Clock::time_point now, const Host* exclude = nullptr) {
    return lb_.Pick(def_->lb, hosts_, now, exclude, def_->outlier.panic_threshold_percent);
  }
  std::span<Host* const> hosts() const { return hosts_; }

  // Closes pooled connections idle past the pool's idle_timeout.
  void SweepIdle(Clock::time_point now);

 private:
  void Flatten();

  std::shared_ptr<const CompiledCluster> def_;
  stats::ClusterCounters* counters_;
  std::vector<std::vector<Ref<Host>>> per_endpoint_;
  std::vector<Host*> hosts_;  // all hosts, endpoint order
  LoadBalancer lb_;
};

}  // namespace onedomain::dataplane
