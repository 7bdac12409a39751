#pragma once

// Exposes the fleet as Prometheus metrics at scrape time: per-node series (label `node`)
// for the nodes the Fleet currently knows (so a departed node's series go away once the
// Fleet forgets it) and fleet totals. Counter totals survive node restarts and departures:
// a node's counters that reset (new start_time) or vanish are folded into a carried base, so
// fleet `_total` series never go down.

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>

namespace onedomain::controlplane {

class Fleet;

class FleetCollector final : public prometheus::Collectable {
 public:
  explicit FleetCollector(const Fleet& fleet) : fleet_(fleet) {}

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  // Per node and counter key: the values last seen and what earlier lives contributed.
  struct CounterTrack {
    long long start_seconds = 0;
    std::map<std::string, double> last;  // key -> value in the current process life
    std::map<std::string, double> base;  // key -> sum over earlier lives
  };

  const Fleet& fleet_;
  mutable std::mutex mu_;
  mutable std::map<std::string, CounterTrack> tracks_;  // by node id
  mutable std::map<std::string, double> departed_;      // totals of forgotten nodes
};

}  // namespace onedomain::controlplane
