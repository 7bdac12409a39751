#pragma once

// Turns admin requests into committed, validated, audited snapshot versions and publishes
// each to the fleet. Every method runs on the admin executor thread (one at a time), which
// serialises commits; the store is only touched from there.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onedomain/v1/admin.pb.h"

namespace onedomain::controlplane {

class FileStore;
class Fleet;

class ConfigManager {
 public:
  // `on_commit` is told each committed version (metrics).
  ConfigManager(FileStore& store, Fleet& fleet, std::function<void(uint64_t)> on_commit = {});

  // Commits `seed` as version 1 when the store is empty; otherwise publishes the latest.
  absl::Status Start(const v1::Snapshot* seed);

  absl::StatusOr<v1::GetConfigResponse> Get(const v1::GetConfigRequest& request) const;
  absl::StatusOr<v1::ChangeResponse> Apply(const v1::ApplyRequest& request,
                                           const std::string& who);
  absl::StatusOr<v1::ChangeResponse> SetUpstream(const v1::SetUpstreamRequest& request,
                                                 const std::string& who);
  absl::StatusOr<v1::ChangeResponse> SetCookiePolicy(const v1::SetCookiePolicyRequest& request,
                                                     const std::string& who);
  absl::StatusOr<v1::ChangeResponse> Rollback(const v1::RollbackRequest& request,
                                              const std::string& who);
  v1::HistoryResponse History(const v1::HistoryRequest& request) const;

  // A node serves `version`, above what the store remembers: the next commit goes above it.
  // True when the floor moved.
  bool RaiseFloor(uint64_t version, const std::string& node_id);

 private:
  // Validates `next`, checks expected_version, diffs, and (unless dry run) commits and
  // publishes. `field_prefix` names the request field validation paths hang under.
  absl::StatusOr<v1::ChangeResponse> Change(v1::Snapshot next, const v1::ChangeOptions& options,
                                            const std::string& who, const std::string& method,
                                            const std::string& field_prefix);

  FileStore& store_;
  Fleet& fleet_;
  std::function<void(uint64_t)> on_commit_;
};

}  // namespace onedomain::controlplane
