#pragma once

// One worker's view of the active snapshot: the shared compiled snapshot plus what is
// per-worker about it (cluster runtimes with their pools, this worker's route counters,
// listeners by slot). A request pins it with a non-atomic Ref, so a config switch never makes
// a request in flight change its routes or pools underneath it.
//
// Thread: one worker.

#include <memory>
#include <vector>

#include "dataplane/runtime/ref.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/upstream/cluster_runtime.h"
#include "dataplane/worker/compiled_snapshot.h"

namespace onedomain::dataplane {

class WorkerConfig : public WorkerRefCounted<WorkerConfig> {
 public:
  std::shared_ptr<const CompiledSnapshot> compiled;
  std::vector<Ref<ClusterRuntime>> clusters;               // by cluster index
  std::vector<stats::RouteCounters*> route_counters;       // by route index
  std::vector<const CompiledListener*> listeners_by_slot;  // sparse; null: not in this snapshot

  const CompiledListener* listener(uint32_t slot) const {
    return slot < listeners_by_slot.size() ? listeners_by_slot[slot] : nullptr;
  }
  const RouteTable& routes() const { return *compiled->routes; }
};

}  // namespace onedomain::dataplane
