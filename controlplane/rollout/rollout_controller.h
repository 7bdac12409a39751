#pragma once

// Moves a committed version through canary waves: picks each wave's nodes, tells the Fleet
// which nodes get the new version (every other node, new ones included, stays on the base
// version), judges each wave with the gates of rollout_math.h against the nodes still on the
// base, and either promotes, or rolls back (commits the base content again as a new version,
// audited, with the failed gate and its numbers). Any NACK of the version aborts at once.
// One rollout at a time; its state is saved in the store at every transition, so a restarted
// control plane resumes it (the current wave's bake starts over) or finishes undoing it.
//
// Threads: everything but Status()/Active() runs on the admin executor (the one thread that
// touches the store); a ticker thread only posts Tick() there. Status() is a copy under a
// mutex, for the console and metrics.
//
// Shared store (etcd): the rollout state in the store is the source of truth. Only the
// elected leader judges and advances waves, reading every replica's nodes (their summaries
// carry the report counters); every replica follows the saved state (every 500 ms, and when
// a version arrives through the watch) and applies the same canary split to its own nodes.
// A new leader adopts a running rollout (the current wave's bake starts over). Any replica
// may start or supersede one; promote/pause/resume/abort must go to the leader.

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "controlplane/rollout/rollout_math.h"
#include "onedomain/v1/admin.pb.h"

namespace prometheus {
class Registry;
class Gauge;
class Counter;
template <typename T>
class Family;
}  // namespace prometheus

namespace onedomain::controlplane {

class ConfigManager;
class Fleet;
class SerialExecutor;
class Store;

class RolloutController {
 public:
  // `configured`: the control-plane config's rollout policy (defaults filled in here).
  RolloutController(Store& store, Fleet& fleet, SerialExecutor& executor,
                    prometheus::Registry& registry, const v1::RolloutPolicy& configured);
  ~RolloutController();
  RolloutController(const RolloutController&) = delete;
  RolloutController& operator=(const RolloutController&) = delete;

  void SetManager(ConfigManager* manager) { manager_ = manager; }

  // Where waves pick nodes and gates read counters: this replica's fleet by default; with a
  // shared store, every replica's. Called on the executor.
  void SetNodeSource(std::function<v1::ListNodesResponse()> nodes) { nodes_ = std::move(nodes); }

  // Shared store: this replica leads singleton work. Executor only.
  void SetLeader(bool leader);

  // ConfigManager, for a version another replica committed (shared store): true when that
  // version is being rolled out; the split is applied and it must not go to every node.
  bool HoldsBack(const std::shared_ptr<const v1::Snapshot>& snapshot);

  // Posts Tick() to the executor every `interval` until StopTicker (or destruction).
  void StartTicker(std::chrono::milliseconds interval);
  void StopTicker();

  // --- executor only ---

  // Whether the caller may make a change with these options now: one rollout at a time
  // (FAILED_PRECONDITION naming the running one, unless supersede), NOW needs the admin role
  // when the configured default is ROLLOUT, a rollout needs a store that keeps its state.
  absl::Status Admit(const v1::ChangeOptions& options, bool caller_is_admin);

  // ConfigManager, right before committing `next` (never for dry runs). True when `next`
  // goes out as a rollout: its state is saved, and the caller must call AfterCommit (the
  // fleet is not to be told). Whatever it answered, a failed commit calls CommitFailed.
  absl::StatusOr<bool> BeforeCommit(const v1::Snapshot& next, const v1::ChangeOptions& options,
                                    const std::string& who,
                                    std::shared_ptr<const v1::Snapshot> latest);
  void AfterCommit(std::shared_ptr<const v1::Snapshot> committed);
  // The commit after BeforeCommit failed (`as_rollout`: what BeforeCommit answered): a
  // superseded rollout goes on, a rollout that never committed is marked aborted.
  void CommitFailed(const absl::Status& why, bool as_rollout);

  // At start, before anything is published: resumes a rollout saved as running, or finishes
  // undoing one whose revert was not committed. True when it told the fleet what to serve
  // (the caller must not publish `latest` to every node).
  bool ResumeFromStore(std::shared_ptr<const v1::Snapshot> latest);

  absl::StatusOr<v1::RolloutStatus> Control(const v1::ControlRolloutRequest& request,
                                            const std::string& who);

  // One judging step (also run by the ticker).
  void Tick();

  // --- any thread ---
  v1::RolloutStatus Status() const;
  bool Active() const;

 private:
  static bool IsActive(v1::RolloutState s) {
    return s == v1::ROLLOUT_STATE_RUNNING || s == v1::ROLLOUT_STATE_PAUSED;
  }
  void StartWave(uint32_t index);
  void Succeed();
  // Ends the rollout as `state` and commits the base content again (method for the audit).
  void Undo(v1::RolloutState state, const std::string& method, const std::string& detail);
  void Save();
  void PublishStatus();
  // Shared store: reads the saved state (at most every 500 ms unless `force`); a leader
  // adopts a running rollout it does not judge yet, anyone else mirrors it.
  void Follow(bool force);
  void Adopt(const v1::RolloutStatus& saved);
  // Applies `st`'s split to this replica's fleet (or ends it), once per change.
  void ApplyLocal(const v1::RolloutStatus& st);
  std::shared_ptr<const v1::Snapshot> SnapshotOf(uint64_t version);
  static std::string SplitKey(const v1::RolloutStatus& st);
  double WaveElapsedSeconds() const;

  Store& store_;
  Fleet& fleet_;
  SerialExecutor& executor_;
  ConfigManager* manager_ = nullptr;
  const v1::RolloutPolicy configured_;

  // Executor-only state.
  std::function<v1::ListNodesResponse()> nodes_;
  bool leader_;  // always with a store only this process writes
  std::chrono::steady_clock::time_point last_follow_;
  std::string applied_split_;  // SplitKey of the split this replica's fleet has; empty: none
  std::map<uint64_t, std::shared_ptr<const v1::Snapshot>> snapshot_cache_;
  // status_ is judged here when version_snapshot_ is set (the leader's own rollout).
  v1::RolloutStatus status_;
  std::shared_ptr<const v1::Snapshot> version_snapshot_;
  std::shared_ptr<const v1::Snapshot> base_snapshot_;
  std::chrono::steady_clock::time_point wave_started_;
  std::chrono::steady_clock::time_point started_;
  bool promote_ = false;
  rollout::RememberedBaseline remembered_;
  struct WindowStart {
    rollout::Counters counters;
    int64_t start_seconds = 0;
    bool canary = false;
  };
  std::map<std::string, WindowStart> windows_;
  // Kept while a superseding change commits; restored if that commit fails.
  std::optional<v1::RolloutStatus> superseded_;
  std::shared_ptr<const v1::Snapshot> superseded_version_;

  mutable std::mutex mu_;
  v1::RolloutStatus published_;  // copy of status_ for other threads

  // Metrics.
  prometheus::Gauge& state_gauge_;
  prometheus::Gauge& wave_gauge_;
  prometheus::Family<prometheus::Gauge>& gate_values_;
  prometheus::Family<prometheus::Counter>& results_;
  prometheus::Gauge& running_seconds_;
  prometheus::Gauge& budget_seconds_;

  std::mutex ticker_mu_;
  std::condition_variable ticker_cv_;
  bool ticker_stop_ = false;
  std::thread ticker_;
};

}  // namespace onedomain::controlplane
