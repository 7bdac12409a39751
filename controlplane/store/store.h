#pragma once

// Where the control plane's committed snapshots, audit log and version floor live. Two
// implementations: FileStore (one machine, the default) and EtcdStore (several replicas
// sharing one etcd). Knows nothing of gRPC services or the fleet.
//
// Threads: ConfigManager calls every method from the admin executor (one at a time);
// Latest(), Staleness() and StateLoss() may also be called from other threads (metrics,
// the node stream). An implementation that learns of versions committed elsewhere (etcd:
// another replica) tells the observer given to Watch() from a thread of its own.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "onedomain/v1/admin.pb.h"

namespace onedomain::controlplane {

// What a store reports for the metrics `onedomain_store_up` and
// `onedomain_store_request_seconds{op}`. Called from any thread; must not block.
struct StoreObserver {
  std::function<void(bool up)> set_up;
  std::function<void(std::string_view op, double seconds)> observe_request;
  // This replica holds (true) or lost (false) the leadership for singleton work.
  std::function<void(bool leader)> set_leader;
};

// Another control-plane replica, as registered under its lease in a shared store.
struct PeerReplica {
  std::string id;
  std::string summary;  // what that replica's summary supplier returned (serialized)
};

class Store {
 public:
  // Told each snapshot committed by someone else (another replica), newest last; never an
  // older version than one told before.
  using ChangeObserver = std::function<void(std::shared_ptr<const v1::Snapshot>)>;

  virtual ~Store() = default;

  // For logs and errors: "file store /var/lib/onedomain/store", "etcd http://a:2379 /p/".
  virtual std::string Describe() const = 0;

  // Other control-plane processes may write it (etcd): replicas, membership, leadership.
  virtual bool Shared() const { return false; }

  // The newest committed snapshot this replica knows, or null when the store is empty.
  virtual std::shared_ptr<const v1::Snapshot> Latest() const = 0;
  uint64_t latest_version() const {
    auto latest = Latest();
    return latest ? latest->version() : 0;
  }

  // Brings Latest() and next_version() up to date with the backing store before a change is
  // computed. UNAVAILABLE (naming the store) when it cannot be reached.
  virtual absl::Status Refresh() = 0;

  // A kept version; NOT_FOUND when pruned or never committed.
  virtual absl::StatusOr<v1::Snapshot> Get(uint64_t version) const = 0;

  // The version the next Commit must carry: one above every version ever issued.
  virtual uint64_t next_version() const = 0;

  // Makes `snapshot` (whose version must be next_version()) the newest version and records
  // `record` in the audit log, durably. ABORTED when another writer committed first (only a
  // shared store: refresh and recompute); UNAVAILABLE when the store cannot be reached.
  virtual absl::Status Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record) = 0;

  // Versions up to `version` were issued elsewhere (a node serves it): never issue them
  // again. No-op when `version` < next_version().
  virtual absl::Status RaiseFloor(uint64_t version, std::string_view why) = 0;

  // Audit records, newest first, at most `limit` (0: all).
  virtual absl::StatusOr<std::vector<v1::AuditRecord>> ReadHistory(uint32_t limit) const = 0;

  // The rollout controller's state (the running or last rollout), durable on return, so a
  // restarted control plane resumes or aborts it. LoadRollout: NOT_FOUND when none was ever
  // saved. Stores that do not keep it yet answer UNIMPLEMENTED naming themselves.
  virtual absl::Status SaveRollout(const v1::RolloutStatus& /*rollout*/) {
    return absl::UnimplementedError("rollouts: the " + Describe() +
                                    " does not keep rollout state yet; use --now");
  }
  virtual absl::StatusOr<v1::RolloutStatus> LoadRollout() const {
    return absl::UnimplementedError("rollouts: the " + Describe() +
                                    " does not keep rollout state yet; use --now");
  }

  // Losses of state noticed since open, by kind (FileStore::state_loss).
  virtual std::map<std::string, uint64_t> StateLoss() const { return {}; }

  // Empty while the store answers; otherwise how old this replica's view may be, for reads
  // served from its cache ("etcd unreachable for 12s: ...").
  virtual std::string Staleness() const { return {}; }

  // Starts telling `observer` about versions committed by others. No-op for a store only
  // this process writes.
  virtual void Watch(ChangeObserver /*observer*/) {}

  // Shared stores only: registers this replica as `replica_id` under a lease (TTL a few
  // seconds, kept alive), refreshing the value from `summary` (called from the store's
  // thread) about every TTL/3, and campaigns for the leadership of singleton work (pruning
  // old versions). A replica that cannot renew its lease stops leader work within one TTL.
  virtual void StartMembership(std::string /*replica_id*/,
                               std::function<std::string()> /*summary*/) {}

  // The other live replicas, as last read (empty for a store only this process uses).
  virtual std::vector<PeerReplica> Peers() const { return {}; }

  // Stops background work (watch, membership); no observer call after it returns.
  virtual void Stop() {}
};

}  // namespace onedomain::controlplane
