#pragma once

// Turns admin requests into committed, validated, audited snapshot versions and publishes
// each to the fleet. Every method runs on the admin executor thread (one at a time), which
// serialises this replica's commits; the store is only touched from there. With a shared
// store (etcd) other replicas commit too: a change is computed from a fresh read of the
// latest version, and a commit that loses the race (ABORTED) is recomputed, unless the
// caller pinned `expected_version`, in which case the conflict is the answer.

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onedomain/v1/admin.pb.h"

namespace onedomain::controlplane {

class Fleet;
class RolloutController;
class Store;

class ConfigManager {
 public:
  // `on_commit` is told each committed version (metrics).
  ConfigManager(Store& store, Fleet& fleet, std::function<void(uint64_t)> on_commit = {});

  // Changes delivered as rollouts go through `rollouts` (which also decides, at Start,
  // whether a saved rollout resumes). Set before Start.
  void SetRollouts(RolloutController* rollouts) { rollouts_ = rollouts; }

  // Commits `seed` as version 1 when the store is empty; otherwise publishes the latest (or
  // lets a saved rollout resume).
  absl::Status Start(const v1::Snapshot* seed);

  // A rollout's undo: commits `base`'s content again as a new version, delivered now, with
  // an audit record saying which version it reverts and why. The new version number.
  absl::StatusOr<uint64_t> CommitRevert(const v1::Snapshot& base, uint64_t reverts_version,
                                        const std::string& method, const std::string& detail);

  // A version committed elsewhere (another replica, told by the store's watch): publishes it
  // when it is newer than what this replica published.
  void OnStoreChange(std::shared_ptr<const v1::Snapshot> snapshot);

  absl::StatusOr<v1::GetConfigResponse> Get(const v1::GetConfigRequest& request) const;
  absl::StatusOr<v1::ChangeResponse> Apply(const v1::ApplyRequest& request, const std::string& who);
  absl::StatusOr<v1::ChangeResponse> SetUpstream(const v1::SetUpstreamRequest& request,
                                                 const std::string& who);
  absl::StatusOr<v1::ChangeResponse> SetCookiePolicy(const v1::SetCookiePolicyRequest& request,
                                                     const std::string& who);
  absl::StatusOr<v1::ChangeResponse> Rollback(const v1::RollbackRequest& request,
                                              const std::string& who);
  absl::StatusOr<v1::HistoryResponse> History(const v1::HistoryRequest& request) const;

  // A node serves `version`, above what the store remembers: the next commit goes above it.
  // True when the floor moved.
  bool RaiseFloor(uint64_t version, const std::string& node_id);

 private:
  // Builds the next snapshot from the latest one (null when the store is empty).
  using Builder = std::function<absl::StatusOr<v1::Snapshot>(const v1::Snapshot* latest)>;

  // Refreshes the store, builds the next snapshot, validates it, checks expected_version,
  // diffs, and (unless dry run) commits and publishes; recomputes when another replica
  // committed first and no expected_version was given. `field_prefix` names the request
  // field validation paths hang under.
  // `revert_of`: set by CommitRevert (the audit record's reverts_version).
  absl::StatusOr<v1::ChangeResponse> Change(const Builder& build, const v1::ChangeOptions& options,
                                            const std::string& who, const std::string& method,
                                            const std::string& field_prefix,
                                            uint64_t revert_of = 0);
  absl::StatusOr<v1::ChangeResponse> ChangeOnce(v1::Snapshot next, const v1::ChangeOptions& options,
                                                const std::string& who, const std::string& method,
                                                const std::string& field_prefix,
                                                uint64_t revert_of);
  void Publish(std::shared_ptr<const v1::Snapshot> snapshot);

  Store& store_;
  Fleet& fleet_;
  std::function<void(uint64_t)> on_commit_;
  RolloutController* rollouts_ = nullptr;
  uint64_t published_ = 0;  // newest version handed to the fleet
};

}  // namespace onedomain::controlplane
