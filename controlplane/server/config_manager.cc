#include "controlplane/server/config_manager.h"

#include "common/config/validation.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/server/diff.h"
#include "controlplane/store/file_store.h"
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

ConfigManager::ConfigManager(FileStore& store, Fleet& fleet,
                             std::function<void(uint64_t)> on_commit)
    : store_(store), fleet_(fleet), on_commit_(std::move(on_commit)) {}

absl::Status ConfigManager::Start(const v1::Snapshot* seed) {
  if (store_.Latest() == nullptr) {
    if (seed == nullptr) {
      return absl::FailedPreconditionError(
          str::Cat("the store in ", store_.directory(),
                   " is empty and the config has no `seed` snapshot to start from"));
    }
    v1::ChangeOptions options;
    options.set_reason("initial seed from the control-plane config");
    auto seeded = Change(*seed, options, "seed", "Seed", "seed");
    if (!seeded.ok()) return seeded.status();
    log::Info("config", "store was empty: committed the seed snapshot as version 1");
    return absl::OkStatus();
  }
  log::Info("config", str::Cat("loaded version ", store_.latest_version(), " from ",
                               store_.directory()));
  if (on_commit_) on_commit_(store_.latest_version());
  fleet_.Publish(store_.Latest());
  return absl::OkStatus();
}

absl::StatusOr<v1::GetConfigResponse> ConfigManager::Get(
    const v1::GetConfigRequest& request) const {
  v1::GetConfigResponse response;
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

absl::StatusOr<v1::ChangeResponse> ConfigManager::Change(v1::Snapshot next,
                                                         const v1::ChangeOptions& options,
                                                         const std::string& who,
                                                         const std::string& method,
                                                         const std::string& field_prefix) {
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

  v1::AuditRecord record;
  record.set_version(next.version());
  *record.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  record.set_who(who);
  record.set_method(method);
  record.set_reason(options.reason());
  *record.mutable_diff() = response.diff();
  if (absl::Status s = store_.Commit(next, record); !s.ok()) {
    log::Error("config", str::Cat("commit of version ", next.version(), " failed: ", s.message()));
    return absl::InternalError(str::Cat("could not persist the change: ", s.message()));
  }
  log::Info("config", str::Cat("committed version ", next.version(), " by ", who, " (", method,
                               "): ", str::Join(response.diff(), "; ")));
  if (on_commit_) on_commit_(next.version());
  fleet_.Publish(store_.Latest());
  return response;
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::Apply(const v1::ApplyRequest& request,
                                                        const std::string& who) {
  if (!request.has_snapshot()) return absl::InvalidArgumentError("snapshot: required");
  return Change(request.snapshot(), request.options(), who, "Apply", "snapshot");
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::SetUpstream(
    const v1::SetUpstreamRequest& request, const std::string& who) {
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
  if (store_.Latest() == nullptr) return absl::FailedPreconditionError("the store is empty");
  v1::Snapshot next = *store_.Latest();
  v1::Cluster* target = nullptr;
  for (v1::Cluster& c : *next.mutable_clusters()) {
    if (c.name() == request.cluster()) target = &c;
  }
  if (target == nullptr) {
    return absl::NotFoundError(str::Cat("cluster: no cluster named '", request.cluster(), "'"));
  }
  *target->mutable_endpoints() = request.endpoints();
  return Change(std::move(next), request.options(), who, "SetUpstream", "");
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::SetCookiePolicy(
    const v1::SetCookiePolicyRequest& request, const std::string& who) {
  if (store_.Latest() == nullptr) return absl::FailedPreconditionError("the store is empty");
  v1::Snapshot next = *store_.Latest();
  if (config::FieldErrors errors =
          config::ValidateCookiePolicy(request.cookie_policy(), next.site().cookie_domain());
      !errors.empty()) {
    return InvalidFields(errors, "cookie_policy");
  }
  *next.mutable_cookie_policy() = request.cookie_policy();
  return Change(std::move(next), request.options(), who, "SetCookiePolicy", "");
}

absl::StatusOr<v1::ChangeResponse> ConfigManager::Rollback(const v1::RollbackRequest& request,
                                                           const std::string& who) {
  if (request.version() == 0) return absl::InvalidArgumentError("version: required");
  auto old = store_.Get(request.version());
  if (!old.ok()) return absl::NotFoundError(str::Cat("version: ", old.status().message()));
  v1::ChangeOptions options = request.options();
  if (options.reason().empty()) options.set_reason(str::Cat("rollback to ", request.version()));
  return Change(std::move(*old), options, who, "Rollback", "");
}

bool ConfigManager::RaiseFloor(uint64_t version, const std::string& node_id) {
  if (version < store_.next_version()) return false;
  if (absl::Status s = store_.RaiseFloor(version, str::Cat("node ", node_id)); !s.ok()) {
    log::Error("config", str::Cat("cannot record version ", version, " served by node ",
                                  node_id, " as issued: ", s.message()));
    return false;
  }
  return true;
}

v1::HistoryResponse ConfigManager::History(const v1::HistoryRequest& request) const {
  v1::HistoryResponse response;
  for (v1::AuditRecord& r : store_.History(request.limit())) {
    *response.add_entries() = std::move(r);
  }
  return response;
}

}  // namespace onedomain::controlplane
