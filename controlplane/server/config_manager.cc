#include "controlplane/server/config_manager.h"

#include <map>

#include "common/config/validation.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/rollout/rollout_controller.h"
#include "controlplane/server/diff.h"
#include "controlplane/store/store.h"
#include "google/protobuf/util/time_util.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

absl::Status InvalidFields(const config::FieldErrors& errors, const std::string& prefix) {
  std::vector<std::string> lines;
  for (const auto& e : errors) {
    std::string path = prefix;
    if (!e.path.empty()) path = prefix.empty() ? e.path : str::Cat(prefix, ".", e.path);
    lines.push_back(path.empty() ? e.message : str::Cat(path, ": ", e.message));
  }
  return absl::InvalidArgumentError(str::Join(lines, "; "));
}

}  // namespace

ConfigManager::ConfigManager(Store& store, Fleet& fleet, std::function<void(uint64_t)> on_commit)
    : store_(store), fleet_(fleet), on_commit_(std::move(on_commit)) {}

absl::Status ConfigManager::Start(const v1::Snapshot* seed) {
  if (absl::Status s = store_.Refresh(); !s.ok()) return s;
  if (store_.Latest() == nullptr) {
    if (seed == nullptr) {
      return absl::FailedPreconditionError(
          str::Cat("the ", store_.Describe(),
                   " is empty and the config has no `seed` snapshot to start from"));
    }
    v1::ChangeOptions options;
    options.set_reason("initial seed from the control-plane config");
    options.set_mode(v1::ROLLOUT_MODE_NOW);  // nothing runs yet: nothing to roll out against
    // Only an empty store is seeded: a replica that loses the race to another one seeding
    // at the same moment serves the winner's version 1 instead.
    options.set_expected_version(0);
    const v1::Snapshot seed_copy = *seed;
    auto seeded = Change(
        [&seed_copy](const v1::Snapshot* latest) -> absl::StatusOr<v1::Snapshot> {
          if (latest != nullptr) return absl::AlreadyExistsError("seeded by another replica");
          return seed_copy;
        },
        options, "seed", "Seed", "seed");
    if (seeded.ok()) {
      log::Info("config", str::Cat("store was empty: committed the seed snapshot as version ",
                                   seeded->version()));
      return absl::OkStatus();
    }
    if (seeded.status().code() != absl::StatusCode::kAlreadyExists) return seeded.status();
  }
  log::Info("config",
            str::Cat("loaded version ", store_.latest_version(), " from the ", store_.Describe()));
  if (rollouts_ != nullptr && rollouts_->ResumeFromStore(store_.Latest())) {
    // The rollout told the fleet what each node serves.
    published_ = std::max(published_, store_.latest_version());
    if (on_commit_) on_commit_(published_);
    return absl::OkStatus();
  }
  Publish(store_.Latest());
  return absl::OkStatus();
}

void ConfigManager::Publish(std::shared_ptr<const v1::Snapshot> snapshot) {
  // Never move the fleet back: a watch event can arrive after this replica's own commit
  // of a newer version, or after a fresh read already delivered it.
  if (snapshot == nullptr || snapshot->version() <= published_) return;
  published_ = snapshot->version();
  if (on_commit_) on_commit_(published_);
  fleet_.Publish(std::move(snapshot));
}

void ConfigManager::OnStoreChange(std::shared_ptr<const v1::Snapshot> snapshot) {
  if (snapshot == nullptr || snapshot->version() <= published_) return;
  if (rollouts_ != nullptr && rollouts_->HoldsBack(snapshot)) {
    log::Info("config", str::Cat("version ", snapshot->version(),
                                 " committed by another replica is being rolled out"));
    published_ = snapshot->version();
    if (on_commit_) on_commit_(published_);
    return;
  }
  log::Info("config", str::Cat("version ", snapshot->version(),
                               " committed by another replica: publishing it"));
  Publish(std::move(snapshot));
}

absl::StatusOr<v1::GetConfigResponse> ConfigManager::Get(
    const v1::GetConfigRequest& request) const {
  v1::GetConfigResponse response;
  response.set_stale(store_.Staleness());
  if (request.version() == 0) {
    if (store_.Latest() == nullptr) return absl::NotFoundError("the store is empty");
    *response.mutable_snapshot() = *store_.Latest();
    return response;
  }
  auto snapshot = store_.Get(request.version());
  if (!snapshot.ok()) {
    return absl::NotFoundError(str::Cat("version: ", snapshot.status().message()));
  }
  *response.mutable_snapshot() = std::move(*snapshot);
  return response;
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::Change(
    const Builder& build, const v1::ChangeOptions& options, const std::string& who,
    const std::string& method, const std::string& field_prefix, uint64_t revert_of) {
  // Bounded: each lost race means another replica committed, so a handful of rounds only
  // runs out under a storm of writes, and then the caller is told to retry.
  constexpr int kAttempts = 5;
  absl::Status last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    if (absl::Status s = store_.Refresh(); !s.ok()) {
      return absl::Status(s.code(), str::Cat("nothing committed: ", s.message()));
    }
    std::shared_ptr<const v1::Snapshot> latest = store_.Latest();
    auto next = build(latest.get());
    if (!next.ok()) return next.status();
    auto result = ChangeOnce(std::move(*next), options, who, method, field_prefix, revert_of);
    if (result.ok() || result.status().code() != absl::StatusCode::kAborted) return result;
    last = result.status();
    if (options.expected_version() != 0) {
      // The caller asked for this exact base version: losing the race is a conflict.
      return absl::FailedPreconditionError(
          str::Cat("options.expected_version: ", options.expected_version(),
                   " is no longer the latest: ", last.message()));
    }
  }
  return absl::AbortedError(
      str::Cat("gave up after ", kAttempts, " commits lost to other replicas: ", last.message()));
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::ChangeOnce(
    v1::Snapshot next, const v1::ChangeOptions& options, const std::string& who,
    const std::string& method, const std::string& field_prefix, uint64_t revert_of) {
  const uint64_t latest = store_.latest_version();
  if (options.expected_version() != 0 && options.expected_version() != latest) {
    return absl::FailedPreconditionError(
        str::Cat("options.expected_version: is ", options.expected_version(),
                 " but the latest version is ", latest, "; fetch it and try again"));
  }
  next.set_version(0);
  if (config::FieldErrors errors = config::ValidateSnapshot(next); !errors.empty()) {
    return InvalidFields(errors, field_prefix);
  }
  // Not latest + 1: after a restore from an older backup, numbers above the newest file
  // were already issued (and may be served by nodes); they are never issued again.
  next.set_version(store_.next_version());
  const v1::Snapshot empty;
  const v1::Snapshot& before = store_.Latest() ? *store_.Latest() : empty;
  v1::ChangeResponse response;
  response.set_version(next.version());
  response.set_dry_run(options.dry_run());
  for (std::string& line : DiffSnapshots(before, next)) response.add_diff(std::move(line));
  if (options.dry_run()) return response;

  // A rollout saves its state before the commit, so a stop right after the commit resumes it
  // instead of handing the new version to every node.
  bool as_rollout = false;
  if (rollouts_ != nullptr) {
    auto decided = rollouts_->BeforeCommit(next, options, who, store_.Latest());
    if (!decided.ok()) return decided.status();
    as_rollout = *decided;
  }
  // Saving the rollout state is a store round trip: another replica may have committed
  // meanwhile (the watch moved next_version). That is a lost race like any other: recompute.
  if (store_.next_version() != next.version()) {
    const absl::Status lost =
        absl::AbortedError(str::Cat("version ", next.version(),
                                    " was issued elsewhere while this change was "
                                    "being prepared"));
    if (rollouts_ != nullptr) rollouts_->CommitFailed(lost, as_rollout);
    return lost;
  }

  v1::AuditRecord record;
  record.set_version(next.version());
  *record.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  record.set_who(who);
  record.set_method(method);
  record.set_reason(options.reason());
  *record.mutable_diff() = response.diff();
  record.set_delivery(as_rollout ? "rollout" : "now");
  record.set_reverts_version(revert_of);
  if (absl::Status s = store_.Commit(next, record); !s.ok()) {
    if (rollouts_ != nullptr) rollouts_->CommitFailed(s, as_rollout);
    log::Error("config", str::Cat("commit of version ", next.version(), " failed: ", s.message()));
    // A lost race (ABORTED) and an unreachable store (UNAVAILABLE, CLI exit 6) keep their
    // codes: the caller can do something about them.
    if (s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kUnavailable) {
      return s;
    }
    return absl::InternalError(str::Cat("could not persist the change: ", s.message()));
  }
  log::Info("config", str::Cat("committed version ", next.version(), " by ", who, " (", method,
                               "): ", str::Join(response.diff(), "; ")));
  if (as_rollout) {
    published_ = next.version();
    if (on_commit_) on_commit_(published_);
    rollouts_->AfterCommit(store_.Latest());
  } else {
    Publish(store_.Latest());
  }
  return response;
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::Apply(const v1::ApplyRequest& request,
                                                        const std::string& who) {
  if (!request.has_snapshot()) return absl::InvalidArgumentError("snapshot: required");
  return Change(
      [&request](const v1::Snapshot*) -> absl::StatusOr<v1::Snapshot> {
        return request.snapshot();
      },
      request.options(), who, "Apply", "snapshot");
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::SetUpstream(const v1::SetUpstreamRequest& request,
                                                              const std::string& who) {
  if (request.cluster().empty()) return absl::InvalidArgumentError("cluster: required");
  if (request.endpoints_size() == 0) {
    return absl::InvalidArgumentError("endpoints: at least one endpoint is required");
  }
  for (int i = 0; i < request.endpoints_size(); ++i) {
    const v1::Endpoint& e = request.endpoints(i);
    if (!config::IsValidHost(e.host())) {
      return absl::InvalidArgumentError(
          str::Cat("endpoints[", i, "].host: '", e.host(), "' is not a host name or IP address"));
    }
    if (e.port() == 0 || e.port() > 65535) {
      return absl::InvalidArgumentError(
          str::Cat("endpoints[", i, "].port: must be 1..65535, got ", e.port()));
    }
  }
  return Change(
      [&request](const v1::Snapshot* latest) -> absl::StatusOr<v1::Snapshot> {
        if (latest == nullptr) return absl::FailedPreconditionError("the store is empty");
        v1::Snapshot next = *latest;
        v1::Cluster* target = nullptr;
        for (v1::Cluster& c : *next.mutable_clusters()) {
          if (c.name() == request.cluster()) target = &c;
        }
        if (target == nullptr) {
          return absl::NotFoundError(
              str::Cat("cluster: no cluster named '", request.cluster(), "'"));
        }
        *target->mutable_endpoints() = request.endpoints();
        return next;
      },
      request.options(), who, "SetUpstream", "");
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::SetCookiePolicy(
    const v1::SetCookiePolicyRequest& request, const std::string& who) {
  return Change(
      [&request](const v1::Snapshot* latest) -> absl::StatusOr<v1::Snapshot> {
        if (latest == nullptr) return absl::FailedPreconditionError("the store is empty");
        v1::Snapshot next = *latest;
        if (config::FieldErrors errors =
                config::ValidateCookiePolicy(request.cookie_policy(), next.site().cookie_domain());
            !errors.empty()) {
          return InvalidFields(errors, "cookie_policy");
        }
        *next.mutable_cookie_policy() = request.cookie_policy();
        return next;
      },
      request.options(), who, "SetCookiePolicy", "");
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::Rollback(const v1::RollbackRequest& request,
                                                           const std::string& who) {
  if (request.version() == 0) return absl::InvalidArgumentError("version: required");
  auto old = store_.Get(request.version());
  if (!old.ok()) return absl::NotFoundError(str::Cat("version: ", old.status().message()));
  v1::ChangeOptions options = request.options();
  if (options.reason().empty()) options.set_reason(str::Cat("rollback to ", request.version()));
  return Change([&old](const v1::Snapshot*) -> absl::StatusOr<v1::Snapshot> { return *old; },
                options, who, "Rollback", "");
}

bool ConfigManager::RaiseFloor(uint64_t version, const std::string& node_id) {
  if (version < store_.next_version()) return false;
  if (absl::Status s = store_.RaiseFloor(version, str::Cat("node ", node_id)); !s.ok()) {
    log::Error("config", str::Cat("cannot record version ", version, " served by node ", node_id,
                                  " as issued: ", s.message()));
    return false;
  }
  return true;
}

absl::StatusOr<v1::HistoryResponse> ConfigManager::History(
    const v1::HistoryRequest& request) const {
  v1::HistoryResponse response;
  auto history = store_.ReadHistory(request.limit());
  if (!history.ok()) return history.status();
  response.set_stale(store_.Staleness());
  // Outcomes are derived, never stored: a revert record names the version it undid.
  std::map<uint64_t, const v1::AuditRecord*> reverted;
  for (const v1::AuditRecord& r : *history) {
    if (r.reverts_version() != 0) reverted[r.reverts_version()] = &r;
  }
  const v1::RolloutStatus rollout =
      rollouts_ != nullptr ? rollouts_->Status() : v1::RolloutStatus();
  for (v1::AuditRecord& r : *history) {
    v1::AuditRecord* e = response.add_entries();
    *e = r;
    if (const auto it = reverted.find(r.version()); it != reverted.end()) {
      e->set_outcome(it->second->method() == "RolloutAbort" ? "aborted" : "rolled_back");
      e->set_outcome_detail(
          str::Cat(it->second->reason(), " (undone by version ", it->second->version(), ")"));
    } else if (rollout.version() == r.version() && (rollout.state() == v1::ROLLOUT_STATE_RUNNING ||
                                                    rollout.state() == v1::ROLLOUT_STATE_PAUSED)) {
      e->set_outcome("rolling_out");
      e->set_outcome_detail(str::Cat("wave ", rollout.wave() + 1, " of ", rollout.waves_size()));
    }
  }
  return response;
}

absl::StatusOr<uint64_t> ConfigManager::CommitRevert(const v1::Snapshot& base,
                                                     uint64_t reverts_version,
                                                     const std::string& method,
                                                     const std::string& detail) {
  v1::ChangeOptions options;
  options.set_mode(v1::ROLLOUT_MODE_NOW);
  options.set_reason(str::Cat("revert of version ", reverts_version, ": ", detail));
  const v1::Snapshot copy = base;
  auto result =
      Change([&copy](const v1::Snapshot*) -> absl::StatusOr<v1::Snapshot> { return copy; }, options,
             "rollout", method, "", reverts_version);
  if (!result.ok()) return result.status();
  return result->version();
}

}  // namespace onedomain::controlplane
