#pragma once

// The control plane's embedded store: committed snapshots by version, plus an append-only
// audit log, in one directory. A commit is durable when Commit returns (temp file, fsync,
// rename, fsync of the directory), so the store survives kill -9 at any instant: a commit is
// either wholly there or not at all. Knows nothing of gRPC.
//
// Layout:  DIR/snapshots/v00000000000000000042.pb   serialized v1::Snapshot, version 42
//          DIR/audit.log                            one JSON v1::AuditRecord per line
//          DIR/high_water_mark                      highest version ever issued (decimal)
//          DIR/rollout.pb                           serialized v1::RolloutStatus (last rollout)
//
// Version numbers are never issued twice, because a node that serves version N trusts that
// N names one content. The next version is one above the floor, the highest of: the
// high_water_mark file (written durably before each snapshot file), every snapshot file
// name, every audit record, and versions nodes report serving (RaiseFloor). A directory
// restored from an older backup therefore continues above what the audit log and the nodes
// remember. Open refuses a store whose newest snapshot file is empty, unreadable or holds
// another version than its name says: an operator must decide, nothing is skipped silently.
// State the store notices it lost (an emptied audit log, a restore) is logged and counted
// (state_loss()).
//
// Thread-compatible: the caller serialises writes (the control plane commits from one
// thread); const methods may run concurrently with each other.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "controlplane/store/store.h"
#include "onedomain/v1/admin.pb.h"

namespace onedomain::controlplane {

class FileStore final : public Store {
 public:
  // Opens (creating if needed) the store in `directory`, keeping `keep_versions` snapshots.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& directory,
                                                         uint32_t keep_versions);

  // The newest committed snapshot, or null when the store is empty.
  std::shared_ptr<const v1::Snapshot> Latest() const override { return latest_; }

  std::string Describe() const override { return "file store " + directory_; }

  // This process is the only writer: always up to date.
  absl::Status Refresh() override { return absl::OkStatus(); }

  // A kept version; NOT_FOUND when pruned or never committed.
  absl::StatusOr<v1::Snapshot> Get(uint64_t version) const override;

  // The version the next Commit must carry: one above every version ever issued.
  uint64_t next_version() const override { return floor_ + 1; }

  // Makes `snapshot` (whose version must be next_version()) the newest version and appends
  // `record` to the audit log. Durable on return; on error the snapshot is not committed
  // (the high-water mark may have moved up, which only leaves a gap).
  absl::Status Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record) override;

  // Versions up to `version` were issued elsewhere (a node serves it): never issue them
  // again. Durable on return. No-op when `version` < next_version().
  absl::Status RaiseFloor(uint64_t version, std::string_view why) override;

  // Losses of state noticed since Open, by kind ("audit_log_empty", "audit_log_missing",
  // "audit_record_unreadable", "restored_below_high_water_mark", "node_ahead_of_store").
  const std::map<std::string, uint64_t>& state_loss() const { return state_loss_; }
  std::map<std::string, uint64_t> StateLoss() const override { return state_loss_; }

  // Audit records, newest first, at most `limit` (0: all).
  std::vector<v1::AuditRecord> History(uint32_t limit) const;
  absl::StatusOr<std::vector<v1::AuditRecord>> ReadHistory(uint32_t limit) const override {
    return History(limit);
  }

  absl::Status SaveRollout(const v1::RolloutStatus& rollout) override;
  absl::StatusOr<v1::RolloutStatus> LoadRollout() const override;

  // Versions still kept, oldest first.
  std::vector<uint64_t> KeptVersions() const;

  const std::string& directory() const { return directory_; }

 private:
  FileStore(std::string directory, uint32_t keep_versions);
  absl::Status Load();
  std::string SnapshotPath(uint64_t version) const;
  absl::StatusOr<v1::Snapshot> ReadSnapshotFile(uint64_t version) const;
  absl::Status WriteHighWaterMark(uint64_t version);
  void Prune();
  void CountLoss(const std::string& kind, const std::string& message);

  std::string directory_;
  uint32_t keep_versions_;
  std::shared_ptr<const v1::Snapshot> latest_;
  std::vector<uint64_t> kept_;          // ascending
  std::vector<v1::AuditRecord> audit_;  // oldest first
  uint64_t floor_ = 0;                  // highest version ever issued, as far as this store knows
  std::map<std::string, uint64_t> state_loss_;
};

}  // namespace onedomain::controlplane
