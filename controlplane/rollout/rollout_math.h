#pragma once

// The pure parts of a rollout, unit-tested without a fleet: the policy (defaults, per-change
// overrides, validation), wave sizes, which nodes a wave picks, and the health gates'
// statistics. No threads, no clock: callers pass times in.
//
// The statistics (docs/rollouts.md says the same for operators):
//  - Each node's counters are cumulative (MetricsReport); a node's window starts at its first
//    report on the version its group should serve (canaries: the rolled-out version; the
//    baseline: the base version) after the wave started, so requests served on the old
//    version before the switch do not count for the canary. A counter that goes down (the
//    node restarted) restarts that node's window.
//  - Ratio gates (5xx, connect failures) pool the group: sum of errors / sum of requests over
//    its nodes, so a busy node weighs more than an idle one. The canary side must have served
//    min_requests before the gate judges ("waiting" until then, and a wave cannot pass while
//    waiting: no verdict on silence). The gate fails when canary > floor AND canary >
//    relative × baseline. A baseline with fewer than min_requests (or none: the last wave,
//    a one-node fleet) is not trusted: the last trusted baseline of this rollout is used,
//    else the floor alone decides.
//  - The WebSocket gate is a rate: abnormal closes (codes other than 1000/1001, or none) per
//    node per minute, over max(window, bake) so a burst in the first second is judged against
//    the whole bake, not extrapolated from one second. Same floor/relative rule; no minimum
//    (zero closes is a valid measurement).

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onedomain/v1/admin.pb.h"
#include "onedomain/v1/bootstrap.pb.h"
#include "onedomain/v1/config_discovery.pb.h"

namespace onedomain::controlplane::rollout {

// "running", "paused", "succeeded", "rolled_back", "aborted", "superseded"; "none" otherwise
// (history, the CLI, the console and the rollouts_total metric all say it the same way).
const char* StateName(v1::RolloutState s);

// Every field of `configured` with defaults filled in where unset.
v1::RolloutPolicy WithDefaults(const v1::RolloutPolicy& configured);

// `base` (already with defaults) with every field set in `change` taking its place.
v1::RolloutPolicy Merge(const v1::RolloutPolicy& base, const v1::RolloutPolicy& change);

// Checks a policy; errors name the field under `prefix` ("rollout.waves[2]: ...").
absl::Status Validate(const v1::RolloutPolicy& policy, const std::string& prefix);

// One wave's cumulative size: a node count or a percentage of the connected nodes.
struct WaveSpec {
  uint32_t count = 0;  // used when percent == 0
  double percent = 0;  // 0 < percent <= 100
};
absl::StatusOr<WaveSpec> ParseWave(const std::string& spec);

// Nodes a wave covers (cumulative) with `connected` nodes: a count is capped at `connected`,
// a percentage is rounded up and at least 1. 0 only when nothing is connected.
uint32_t WaveSize(const WaveSpec& spec, uint32_t connected);

// A candidate node for a wave.
struct Candidate {
  std::string node_id;
  std::string zone;
};

// Adds nodes from `candidates` (not already in `chosen`) to `chosen` until it holds `size`.
// Order: zones take turns (the zone with the fewest chosen nodes first), and within a zone
// nodes are ordered by a hash of (version, node id), so consecutive rollouts do not always
// start on the same node and the first waves span zones.
void PickCanaries(const std::vector<Candidate>& candidates, uint64_t version, uint32_t size,
                  std::set<std::string>& chosen);

// The counters a gate reads from a report.
struct Counters {
  double requests = 0;
  double http_5xx = 0;
  double connect_failures = 0;
  double ws_abnormal = 0;
};
Counters CountersOf(const v1::MetricsReport& report);
// `now` - `start`; nullopt when a counter went down (the node restarted).
std::optional<Counters> Delta(const Counters& start, const Counters& now);

// One side (canary or baseline) of a window: pooled deltas and how many nodes contributed.
struct Side {
  Counters sum;
  uint32_t nodes = 0;
  void Add(const Counters& delta) {
    sum.requests += delta.requests;
    sum.http_5xx += delta.http_5xx;
    sum.connect_failures += delta.connect_failures;
    sum.ws_abnormal += delta.ws_abnormal;
    ++nodes;
  }
};

// The last trusted baseline values, by gate; kept across waves of one rollout.
struct RememberedBaseline {
  std::optional<double> http_5xx;
  std::optional<double> connect_failure;
  std::optional<double> ws_abnormal_close;
};

struct Verdict {
  std::vector<v1::GateValue> gates;  // http_5xx, connect_failure, ws_abnormal_close
  bool failed = false;
  bool waiting = false;  // some gate lacks data: the wave may not pass yet
  std::string failure;   // the first failing gate and its numbers
};

// Judges one window. `window_minutes`: time since the wave started; `bake_minutes`: the
// bake. Updates `remembered` with baselines it trusted.
Verdict Judge(const Side& canary, const Side& baseline, double window_minutes, double bake_minutes,
              const v1::RolloutPolicy& policy, RememberedBaseline& remembered);

}  // namespace onedomain::controlplane::rollout
