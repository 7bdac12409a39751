#pragma once

// The control plane's embedded store: committed snapshots by version, plus an append-only
// audit log, in one directory. A commit is durable when Commit returns (temp file, fsync,
// rename, fsync of the directory), so the store survives kill -9 at any instant: a commit is
// either wholly there or not at all. Knows nothing of gRPC.
//
// Layout:  DIR/snapshots/v00000000000000000042.pb   serialized v1::Snapshot, version 42
//          DIR/audit.log                            one JSON v1::AuditRecord per line
//
// Thread-compatible: the caller serialises writes (the control plane commits from one
// thread); const methods may run concurrently with each other.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onedomain/v1/admin.pb.h"

namespace onedomain::controlplane {

class FileStore {
 public:
  // Opens (creating if needed) the store in `directory`, keeping `keep_versions` snapshots.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& directory,
                                                         uint32_t keep_versions);

  // The newest committed snapshot, or null when the store is empty.
  std::shared_ptr<const v1::Snapshot> Latest() const { return latest_; }
  uint64_t latest_version() const;

  // A kept version; NOT_FOUND when pruned or never committed.
  absl::StatusOr<v1::Snapshot> Get(uint64_t version) const;

  // Makes `snapshot` (whose version must be latest_version() + 1) the newest version and
  // appends `record` to the audit log. Durable on return; on error nothing changed.
  absl::Status Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record);

  // Audit records, newest first, at most `limit` (0: all).
  std::vector<v1::AuditRecord> History(uint32_t limit) const;

  // Versions still kept, oldest first.
  std::vector<uint64_t> KeptVersions() const;

  const std::string& directory() const { return directory_; }

 private:
  FileStore(std::string directory, uint32_t keep_versions);
  absl::Status Load();
  std::string SnapshotPath(uint64_t version) const;
  void Prune();

  std::string directory_;
  uint32_t keep_versions_;
  std::shared_ptr<const v1::Snapshot> latest_;
  std::vector<uint64_t> kept_;  // ascending
  std::vector<v1::AuditRecord> audit_;  // oldest first
};

}  // namespace onedomain::controlplane
