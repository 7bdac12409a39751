#pragma once

// The control plane's store in etcd (v3 gRPC API, stubs generated at build time from
// Debian's etcd .proto files), shared by every control-plane replica. Layout under the
// prefix P (default "/onedomain/"):
//
//   P version               latest committed version (decimal)
//   P floor                 highest version issued above `version` (a node served it)
//   P snapshots/<%020d>     serialized v1::Snapshot; the newest keep_versions are kept
//   P audit/<%020d>         one JSON v1::AuditRecord per committed version
//   P lkg                   last known good: newest version ACKed by every connected node
//                           of every replica (written by the leader)
//   P replicas/<id>         each live replica's node summary, under its lease
//   P rollout               serialized v1::RolloutStatus: the running or last rollout
//   P leader/...            v3election campaign keys (one leader for singleton work)
//
// A commit is ONE etcd transaction: compare the mod_revision of `version` and `floor` with
// what this replica last read; on success put version, snapshot and audit record. Two
// replicas therefore never commit the same version number, and a replica that computed its
// change from an older version loses (ABORTED).
//
// Pruning snapshots beyond keep_versions is singleton work: only the elected leader does it,
// and only while its lease is known to be alive (renewed less than one TTL ago).
//
// A watch thread follows `version` from the revision last read and tells the ChangeObserver
// about versions other replicas commit; a compacted or failed watch resumes from a fresh read.
// While etcd cannot be reached, Latest() keeps answering from the cache (nodes keep being
// served), writes fail with UNAVAILABLE naming etcd, and Staleness() says for how long.
//
// Thread-safe: the cache is behind a mutex; requests may run from any thread.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "controlplane/store/store.h"

namespace onedomain::controlplane {

class EtcdStore final : public Store {
 public:
  struct Options {
    std::vector<std::string> endpoints;  // http(s)://host:port
    std::string prefix = "/onedomain/";
    std::string ca_file;
    std::string cert_file;
    std::string key_file;
    std::chrono::milliseconds dial_timeout{5000};
    std::chrono::milliseconds request_timeout{5000};
    uint32_t keep_versions = 50;
    // Replica registration and leadership: a replica that cannot renew its lease stops
    // leader work within one TTL. Not a config key yet (fixed 5s in the control plane).
    std::chrono::seconds lease_ttl{5};
    StoreObserver observer;
  };

  // Connects (waiting up to dial_timeout for a first answer) and reads the latest version.
  static absl::StatusOr<std::unique_ptr<EtcdStore>> Open(Options options);
  ~EtcdStore() override;

  std::string Describe() const override;
  bool Shared() const override { return true; }
  std::shared_ptr<const v1::Snapshot> Latest() const override;
  absl::Status Refresh() override;
  absl::StatusOr<v1::Snapshot> Get(uint64_t version) const override;
  uint64_t next_version() const override;
  absl::Status Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record) override;
  absl::Status RaiseFloor(uint64_t version, std::string_view why) override;
  absl::StatusOr<std::vector<v1::AuditRecord>> ReadHistory(uint32_t limit) const override;
  absl::Status SaveRollout(const v1::RolloutStatus& rollout) override;
  absl::StatusOr<v1::RolloutStatus> LoadRollout() const override;
  std::map<std::string, uint64_t> StateLoss() const override;
  std::string Staleness() const override;
  void Watch(ChangeObserver observer) override;
  void StartMembership(std::string replica_id, std::function<std::string()> summary) override;
  std::vector<PeerReplica> Peers() const override;
  void Stop() override;

  // `controlplane store copy` (idempotent migration from a file store). ImportVersion
  // writes a snapshot and/or an audit record under `version` unless the key is already there
  // with the same bytes (then it is skipped: *written stays false); ALREADY_EXISTS when it
  // holds other content. ImportHead then sets `version` and `floor` when they are below
  // `latest` and `floor`. Only for a store no replica is writing to yet.
  absl::Status ImportVersion(uint64_t version, const v1::Snapshot* snapshot,
                             const v1::AuditRecord* record, bool* written);
  absl::Status ImportHead(uint64_t latest, uint64_t floor);

  class Impl;

 private:
  explicit EtcdStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace onedomain::controlplane
