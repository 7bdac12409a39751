#include "dataplane/upstream/cluster_runtime.h"

#include "dataplane/upstream/upstream_connection.h"

namespace onedomain::dataplane {

ClusterRuntime::ClusterRuntime(std::shared_ptr<const CompiledCluster> def,
                               stats::ClusterCounters* counters)
    : def_(std::move(def)), counters_(counters) {
  per_endpoint_.resize(def_->endpoints.size());
  for (size_t i = 0; i < def_->endpoints.size(); ++i) {
    SetAddresses(i, def_->endpoints[i].addresses);
  }
}

ClusterRuntime::~ClusterRuntime() {
  for (auto& hosts : per_endpoint_) {
    for (Ref<Host>& h : hosts) {
      h->retired = true;
      h->pool().Clear();
    }
  }
}

void ClusterRuntime::SetAddresses(size_t index,
                                  const std::vector<boost::asio::ip::tcp::endpoint>& addresses) {
  if (index >= per_endpoint_.size()) return;
  std::vector<Ref<Host>> next;
  next.reserve(addresses.size());
  std::vector<Ref<Host>>& current = per_endpoint_[index];
  for (const auto& addr : addresses) {
    Ref<Host> keep;
    for (Ref<Host>& h : current) {
      if (h && h->address() == addr) {
        keep = std::move(h);
        break;
      }
    }
    if (!keep) keep = Ref<Host>(new Host(addr, def_->endpoints[index].authority, counters_));
    next.push_back(std::move(keep));
  }
  for (Ref<Host>& h : current) {
    if (!h) continue;  // moved into `next`
    h->retired = true;
    h->pool().Clear();
  }
  current = std::move(next);
  Flatten();
}

void ClusterRuntime::Flatten() {
  hosts_.clear();
  for (auto& hosts : per_endpoint_) {
    for (Ref<Host>& h : hosts) hosts_.push_back(h.get());
  }
}

void ClusterRuntime::SweepIdle(Clock::time_point now) {
  for (Host* h : hosts_) h->pool().Sweep(now, def_->pool.idle_timeout);
}

}  // namespace onedomain::dataplane
