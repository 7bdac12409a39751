#include "controlplane/rollout/rollout_controller.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/rollout/rollout_math.h"
#include "controlplane/server/config_manager.h"
#include "controlplane/server/serial_executor.h"
#include "controlplane/store/store.h"
#include "google/protobuf/util/time_util.h"

namespace onedomain::controlplane {
namespace {

using google::protobuf::util::TimeUtil;

double Seconds(const google::protobuf::Duration& d) {
  return static_cast<double>(d.seconds()) + d.nanos() / 1e9;
}

v1::RolloutMode EffectiveMode(const v1::ChangeOptions& options,
                              const v1::RolloutPolicy& configured) {
  return options.mode() != v1::ROLLOUT_MODE_UNSPECIFIED ? options.mode()
                                                        : configured.default_mode();
}

}  // namespace

RolloutController::RolloutController(Store& store, Fleet& fleet, SerialExecutor& executor,
                                     prometheus::Registry& registry,
                                     const v1::RolloutPolicy& configured)
    : store_(store),
      fleet_(fleet),
      executor_(executor),
      configured_(rollout::WithDefaults(configured)),
      nodes_([&fleet] { return fleet.List(); }),
      leader_(!store.Shared()),
      state_gauge_(prometheus::BuildGauge()
                       .Name("onedomain_rollout_state")
                       .Help("The current or last rollout: 0 none, 1 running, 2 paused, "
                             "3 succeeded, 4 rolled back, 5 aborted, 6 superseded.")
                       .Register(registry)
                       .Add({})),
      wave_gauge_(prometheus::BuildGauge()
                      .Name("onedomain_rollout_wave")
                      .Help("Wave (1-based) the running rollout is baking; 0 when none runs.")
                      .Register(registry)
                      .Add({})),
      gate_values_(prometheus::BuildGauge()
                       .Name("onedomain_rollout_gate_value")
                       .Help("Each health gate's value over the current wave's window, for the "
                             "canary nodes and the baseline nodes (ratios per request; "
                             "ws_abnormal_close per node per minute).")
                       .Register(registry)),
      results_(prometheus::BuildCounter()
                   .Name("onedomain_rollouts_total")
                   .Help("Rollouts ended, by result: succeeded, rolled_back, aborted, "
                         "superseded.")
                   .Register(registry)),
      running_seconds_(prometheus::BuildGauge()
                           .Name("onedomain_rollout_running_seconds")
                           .Help("How long the running rollout has run; 0 when none runs.")
                           .Register(registry)
                           .Add({})),
      budget_seconds_(prometheus::BuildGauge()
                          .Name("onedomain_rollout_budget_seconds")
                          .Help("The running rollout's budget (policy `budget`); a rollout "
                                "running longer is stuck.")
                          .Register(registry)
                          .Add({})) {
  for (const char* r : {"succeeded", "rolled_back", "aborted", "superseded"}) {
    results_.Add({{"result", r}});
  }
  for (const char* g : {"http_5xx", "connect_failure", "ws_abnormal_close"}) {
    for (const char* side : {"canary", "baseline"}) gate_values_.Add({{"gate", g}, {"side", side}});
  }
  budget_seconds_.Set(Seconds(configured_.budget()));
}

RolloutController::~RolloutController() { StopTicker(); }

void RolloutController::StartTicker(std::chrono::milliseconds interval) {
  ticker_ = std::thread([this, interval] {
    std::unique_lock lock(ticker_mu_);
    while (!ticker_cv_.wait_for(lock, interval, [this] { return ticker_stop_; })) {
      executor_.Post([this] { Tick(); });
    }
  });
}

void RolloutController::StopTicker() {
  {
    std::lock_guard lock(ticker_mu_);
    ticker_stop_ = true;
  }
  ticker_cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

absl::Status RolloutController::Admit(const v1::ChangeOptions& options, bool caller_is_admin) {
  if (options.dry_run()) return absl::OkStatus();
  if (store_.Shared()) Follow(true);  // another replica may have started one
  const v1::RolloutMode mode = EffectiveMode(options, configured_);
  if (IsActive(status_.state()) && !options.supersede()) {
    return absl::FailedPreconditionError(
        str::Cat("options.supersede: a rollout of version ", status_.version(), " is ",
                 rollout::StateName(status_.state()), " (wave ", status_.wave() + 1, " of ",
                 status_.waves_size(),
                 "); wait for it, `rollout promote` or `rollout abort` it, or pass --supersede"));
  }
  if (mode == v1::ROLLOUT_MODE_NOW && options.mode() == v1::ROLLOUT_MODE_NOW &&
      configured_.default_mode() == v1::ROLLOUT_MODE_ROLLOUT && !caller_is_admin) {
    return absl::PermissionDeniedError(
        "options.mode: --now skips the configured rollout and needs role admin");
  }
  if (mode == v1::ROLLOUT_MODE_ROLLOUT) {
    if (options.has_rollout_policy()) {
      if (absl::Status s = rollout::Validate(options.rollout_policy(), "options.rollout_policy");
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> RolloutController::BeforeCommit(const v1::Snapshot& next,
                                                     const v1::ChangeOptions& options,
                                                     const std::string& who,
                                                     std::shared_ptr<const v1::Snapshot> latest) {
  const v1::RolloutMode mode = EffectiveMode(options, configured_);
  std::shared_ptr<const v1::Snapshot> base = std::move(latest);
  superseded_.reset();
  superseded_version_.reset();
  // No store read here (Admit refreshed the state just before): it would widen the window
  // between choosing the version number and committing it.
  if (IsActive(status_.state())) {
    if (!options.supersede()) {
      return absl::FailedPreconditionError(str::Cat("options.supersede: a rollout of version ",
                                                    status_.version(),
                                                    " is running; pass --supersede to replace it"));
    }
    // The new change starts from what the fleet ran before the superseded rollout.
    superseded_ = status_;
    superseded_version_ = version_snapshot_;
    base = base_snapshot_ ? base_snapshot_ : SnapshotOf(status_.base_version());
    status_.set_state(v1::ROLLOUT_STATE_SUPERSEDED);
    status_.set_detail(str::Cat("superseded by version ", next.version(), " (", who, ")"));
    *status_.mutable_finished() = TimeUtil::GetCurrentTime();
  }
  if (mode != v1::ROLLOUT_MODE_ROLLOUT) {
    if (superseded_) {
      Save();
      results_.Add({{"result", "superseded"}}).Increment();
      PublishStatus();
    }
    return false;
  }
  v1::RolloutPolicy policy = rollout::Merge(configured_, options.rollout_policy());
  if (absl::Status s = rollout::Validate(policy, "options.rollout_policy"); !s.ok()) return s;
  v1::RolloutStatus st;
  st.set_state(v1::ROLLOUT_STATE_RUNNING);
  st.set_version(next.version());
  st.set_base_version(base ? base->version() : 0);
  *st.mutable_policy() = policy;
  for (const std::string& w : policy.waves()) {
    v1::WaveStatus* ws = st.add_waves();
    ws->set_spec(w);
    ws->set_state("pending");
  }
  *st.mutable_started() = TimeUtil::GetCurrentTime();
  st.set_who(who);
  st.set_reason(options.reason());
  st.set_bake_seconds(Seconds(policy.bake()));
  if (superseded_) {
    // Saved as superseded first: a crash before the new state is saved leaves a record
    // saying what happened to the old rollout.
    if (absl::Status s = store_.SaveRollout(status_); !s.ok()) {
      status_ = *superseded_;
      return s;
    }
  }
  if (absl::Status s = store_.SaveRollout(st); !s.ok()) {
    if (superseded_) status_ = *superseded_;
    return absl::Status(s.code(),
                        str::Cat("nothing committed: cannot save the rollout: ", s.message()));
  }
  if (superseded_) results_.Add({{"result", "superseded"}}).Increment();
  status_ = std::move(st);
  base_snapshot_ = std::move(base);
  version_snapshot_.reset();
  started_ = std::chrono::steady_clock::now();
  remembered_ = {};
  windows_.clear();
  promote_ = false;
  return true;
}

void RolloutController::CommitFailed(const absl::Status& why, bool as_rollout) {
  if (!superseded_ && !as_rollout) return;  // a change delivered now: nothing to undo here
  if (superseded_) {
    // The old rollout goes on as if nothing happened.
    status_ = *superseded_;
    version_snapshot_ = superseded_version_;
    superseded_.reset();
    Save();
  } else {
    status_.set_state(v1::ROLLOUT_STATE_ABORTED);
    status_.set_detail(str::Cat("the change was not committed: ", why.message()));
    Save();
  }
  PublishStatus();
}

void RolloutController::AfterCommit(std::shared_ptr<const v1::Snapshot> committed) {
  superseded_.reset();
  superseded_version_.reset();
  if (committed) snapshot_cache_[committed->version()] = committed;
  if (!leader_) {
    // Another replica leads: it adopts the rollout and picks the waves; until then this
    // replica's nodes stay on the base.
    version_snapshot_.reset();
    log::Info("rollout", str::Cat("version ", status_.version(),
                                  " saved for a rollout; the leader runs its waves"));
    ApplyLocal(status_);
    PublishStatus();
    return;
  }
  version_snapshot_ = std::move(committed);
  log::Info("rollout",
            str::Cat("rolling out version ", status_.version(), " over ", status_.waves_size(),
                     " waves (", str::Join(status_.policy().waves(), ", "), "), bake ",
                     status_.bake_seconds(), "s; the other nodes stay on version ",
                     status_.base_version()));
  if (base_snapshot_ == nullptr) {
    // Nothing ran before (empty store): there is nothing to judge against or return to.
    Succeed();
    return;
  }
  StartWave(0);
}

void RolloutController::StartWave(uint32_t index) {
  std::vector<rollout::Candidate> candidates;
  const v1::ListNodesResponse listed = nodes_();
  for (const v1::NodeStatus& n : listed.nodes()) {
    if (n.connected()) candidates.push_back({n.node_id(), n.zone()});
  }
  const auto connected = static_cast<uint32_t>(candidates.size());
  std::set<std::string> chosen(status_.canary_nodes().begin(), status_.canary_nodes().end());
  const uint32_t last = static_cast<uint32_t>(status_.waves_size()) - 1;
  // Skip waves that would add no node (10% of 10 nodes after "1"); never the last.
  while (index < last) {
    auto spec = rollout::ParseWave(status_.waves(static_cast<int>(index)).spec());
    const uint32_t size = spec.ok() ? rollout::WaveSize(*spec, connected) : 0;
    if (size > chosen.size() || connected == 0) break;
    status_.mutable_waves(static_cast<int>(index))->set_state("skipped");
    ++index;
  }
  auto spec = rollout::ParseWave(status_.waves(static_cast<int>(index)).spec());
  const uint32_t size = spec.ok() ? rollout::WaveSize(*spec, connected) : connected;
  rollout::PickCanaries(candidates, status_.version(), size, chosen);
  status_.clear_canary_nodes();
  for (const std::string& id : chosen) status_.add_canary_nodes(id);
  status_.set_wave(index);
  v1::WaveStatus* wave = status_.mutable_waves(static_cast<int>(index));
  wave->set_state("baking");
  wave->set_nodes(static_cast<uint32_t>(chosen.size()));
  *status_.mutable_wave_started() = TimeUtil::GetCurrentTime();
  wave_started_ = std::chrono::steady_clock::now();
  windows_.clear();
  promote_ = false;
  fleet_.SetTargets(base_snapshot_, version_snapshot_, std::move(chosen));
  applied_split_ = SplitKey(status_);
  log::Info("rollout",
            str::Cat("version ", status_.version(), ": wave ", index + 1, "/", status_.waves_size(),
                     " (", wave->spec(), ") on ", wave->nodes(), " of ", connected,
                     " connected nodes: ", str::Join(status_.canary_nodes(), ", ")));
  Save();
  PublishStatus();
}

void RolloutController::Succeed() {
  status_.set_state(v1::ROLLOUT_STATE_SUCCEEDED);
  if (status_.waves_size() > 0) {
    status_.mutable_waves(static_cast<int>(status_.wave()))->set_state("passed");
  }
  *status_.mutable_finished() = TimeUtil::GetCurrentTime();
  status_.set_detail("every wave passed");
  if (version_snapshot_) fleet_.Publish(version_snapshot_);
  applied_split_.clear();
  Save();
  results_.Add({{"result", "succeeded"}}).Increment();
  log::Info("rollout", str::Cat("version ", status_.version(),
                                ": every wave passed; all nodes "
                                "get it"));
  PublishStatus();
}

void RolloutController::Undo(v1::RolloutState state, const std::string& method,
                             const std::string& detail) {
  status_.set_state(state);
  status_.set_detail(detail);
  // `finished` stays unset until the revert has committed (or failed): a reader on any replica
  // sees the rollout as ended only once its revert version is known. The state is saved first
  // so a restart between the two saves commits the revert (ResumeFromStore).
  if (status_.waves_size() > 0) {
    status_.mutable_waves(static_cast<int>(status_.wave()))->set_state("failed");
  }
  Save();
  results_.Add({{"result", rollout::StateName(state)}}).Increment();
  log::Warn("rollout",
            str::Cat("version ", status_.version(), " ", rollout::StateName(state), ": ", detail,
                     "; returning the canaries to version ", status_.base_version()));
  // Cleared before the revert commits: nothing may hand the fleet the latest version (the
  // one being undone) while the split ends; the revert's publish ends it.
  applied_split_.clear();
  absl::StatusOr<uint64_t> revert = absl::FailedPreconditionError("no base version");
  if (base_snapshot_ != nullptr && manager_ != nullptr) {
    revert = manager_->CommitRevert(*base_snapshot_, status_.version(), method, detail);
  }
  if (revert.ok()) {
    status_.set_revert_version(*revert);
  } else {
    // The nodes must not stay on the bad version while the store is away: they get the base
    // now; ResumeFromStore commits the revert at the next start.
    log::Error("rollout", str::Cat("could not commit the revert of version ", status_.version(),
                                   ": ", revert.status().message(),
                                   "; serving the base version without committing it"));
    if (base_snapshot_) fleet_.Publish(base_snapshot_);
    status_.set_detail(str::Cat(detail, "; revert not committed yet: ", revert.status().message()));
  }
  *status_.mutable_finished() = TimeUtil::GetCurrentTime();
  Save();
  PublishStatus();
}

double RolloutController::WaveElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - wave_started_).count();
}

void RolloutController::Tick() {
  if (store_.Shared()) Follow(false);
  if (!leader_ || !IsActive(status_.state()) || version_snapshot_ == nullptr) {
    PublishStatus();
    return;
  }
  const v1::ListNodesResponse listed = nodes_();
  const std::set<std::string> canaries(status_.canary_nodes().begin(),
                                       status_.canary_nodes().end());
  if (canaries.empty()) {
    StartWave(status_.wave());  // nothing was connected when the wave began
    return;
  }
  rollout::Side canary;
  rollout::Side baseline;
  uint32_t on_version = 0, on_base = 0, other = 0;
  for (const v1::NodeStatus& n : listed.nodes()) {
    const std::string& id = n.node_id();
    const bool is_canary = canaries.count(id) != 0;
    if (is_canary && n.version_nacked() == status_.version()) {
      Undo(v1::ROLLOUT_STATE_ROLLED_BACK, "RolloutRollback",
           str::Cat("nack: node ", id, " refused version ", status_.version(), ": ",
                    str::EscapeForLog(n.nack_error(), 256)));
      return;
    }
    if (!n.connected()) continue;
    if (n.version_acked() == status_.version()) {
      ++on_version;
    } else if (n.version_acked() == status_.base_version()) {
      ++on_base;
    } else {
      ++other;
    }
    if (!n.has_counters()) continue;
    const v1::NodeCounters& c = n.counters();
    const uint64_t expected = is_canary ? status_.version() : status_.base_version();
    if (c.config_version() != expected) {
      windows_.erase(id);
      continue;
    }
    const rollout::Counters now{static_cast<double>(c.requests()),
                                static_cast<double>(c.http_5xx()),
                                static_cast<double>(c.upstream_connect_failures()),
                                static_cast<double>(c.websocket_closes_abnormal())};
    const int64_t start = c.start_seconds();
    auto it = windows_.find(id);
    if (it == windows_.end() || it->second.start_seconds != start ||
        it->second.canary != is_canary) {
      windows_[id] = {now, start, is_canary};
      continue;
    }
    const auto delta = rollout::Delta(it->second.counters, now);
    if (!delta) {
      it->second = {now, start, is_canary};
      continue;
    }
    (is_canary ? canary : baseline).Add(*delta);
  }
  status_.set_nodes_on_version(on_version);
  status_.set_nodes_on_base(on_base);
  status_.set_nodes_other(other);
  const double elapsed = WaveElapsedSeconds();
  const double bake = Seconds(status_.policy().bake());
  status_.set_baked_seconds(elapsed);
  const rollout::Verdict verdict =
      rollout::Judge(canary, baseline, elapsed / 60.0, bake / 60.0, status_.policy(), remembered_);
  *status_.mutable_gates() = {verdict.gates.begin(), verdict.gates.end()};
  if (verdict.failed) {
    Undo(v1::ROLLOUT_STATE_ROLLED_BACK, "RolloutRollback",
         str::Cat("gate ", verdict.failure, " in wave ", status_.wave() + 1));
    return;
  }
  const bool baked = elapsed >= bake;
  if (status_.state() == v1::ROLLOUT_STATE_RUNNING && (promote_ || (baked && !verdict.waiting))) {
    if (promote_) log::Info("rollout", str::Cat("version ", status_.version(), ": promoted"));
    status_.mutable_waves(static_cast<int>(status_.wave()))->set_state("passed");
    if (status_.wave() + 1 >= static_cast<uint32_t>(status_.waves_size())) {
      Succeed();
    } else {
      StartWave(status_.wave() + 1);
    }
    return;
  }
  if (baked && verdict.waiting) {
    status_.set_detail(str::Cat("waiting for ", status_.policy().min_requests(),
                                " requests on the canary nodes (", canary.sum.requests,
                                " so far)"));
  } else if (status_.state() == v1::ROLLOUT_STATE_PAUSED) {
    status_.set_detail("paused");
  } else {
    status_.set_detail("baking");
  }
  PublishStatus();
}

bool RolloutController::ResumeFromStore(std::shared_ptr<const v1::Snapshot> latest) {
  if (store_.Shared()) {
    // The leader (elected later) adopts a running rollout; until then this replica's nodes
    // get the split the store says, and a running rollout's version goes to no one else.
    if (latest) snapshot_cache_[latest->version()] = latest;
    Follow(true);
    return IsActive(status_.state()) && latest && status_.version() == latest->version();
  }
  auto saved = store_.LoadRollout();
  if (!saved.ok()) {
    if (saved.status().code() != absl::StatusCode::kNotFound &&
        saved.status().code() != absl::StatusCode::kUnimplemented) {
      log::Error("rollout", str::Cat("cannot read the saved rollout: ", saved.status().message(),
                                     "; publishing the latest version to every node"));
    }
    return false;
  }
  status_ = std::move(*saved);
  const uint64_t latest_version = latest ? latest->version() : 0;
  const auto base = store_.Get(status_.base_version());
  if (IsActive(status_.state())) {
    if (status_.version() > latest_version || status_.version() < latest_version) {
      status_.set_state(v1::ROLLOUT_STATE_ABORTED);
      status_.set_detail(status_.version() > latest_version
                             ? "the control plane stopped before the change was committed"
                             : str::Cat("version ", latest_version, " was committed after it"));
      *status_.mutable_finished() = TimeUtil::GetCurrentTime();
      Save();
      PublishStatus();
      return false;
    }
    if (!base.ok()) {
      log::Error("rollout", str::Cat("cannot resume the rollout of version ", status_.version(),
                                     ": its base version ", status_.base_version(), " is gone (",
                                     base.status().message(), "); every node gets version ",
                                     status_.version()));
      status_.set_state(v1::ROLLOUT_STATE_ABORTED);
      status_.set_detail("base version gone at restart; finished without judging");
      Save();
      PublishStatus();
      return false;
    }
    base_snapshot_ = std::make_shared<const v1::Snapshot>(*base);
    version_snapshot_ = std::move(latest);
    started_ = std::chrono::steady_clock::now();
    wave_started_ = started_;
    *status_.mutable_wave_started() = TimeUtil::GetCurrentTime();
    windows_.clear();
    remembered_ = {};
    std::set<std::string> canaries(status_.canary_nodes().begin(), status_.canary_nodes().end());
    log::Warn("rollout", str::Cat("resuming the rollout of version ", status_.version(),
                                  " at wave ", status_.wave() + 1, "/", status_.waves_size(),
                                  " (its bake starts over) on ", canaries.size(), " canary nodes"));
    fleet_.SetTargets(base_snapshot_, version_snapshot_, std::move(canaries));
    Save();
    PublishStatus();
    return true;
  }
  if ((status_.state() == v1::ROLLOUT_STATE_ROLLED_BACK ||
       status_.state() == v1::ROLLOUT_STATE_ABORTED) &&
      status_.revert_version() == 0 && status_.version() == latest_version && base.ok()) {
    log::Warn("rollout", str::Cat("the revert of version ", status_.version(),
                                  " was not committed before the stop; committing it now"));
    base_snapshot_ = std::make_shared<const v1::Snapshot>(*base);
    auto revert = manager_ ? manager_->CommitRevert(*base_snapshot_, status_.version(),
                                                    "RolloutRollback", status_.detail())
                           : absl::StatusOr<uint64_t>(absl::InternalError("no manager"));
    if (revert.ok()) {
      status_.set_revert_version(*revert);
    } else {
      fleet_.Publish(base_snapshot_);
    }
    *status_.mutable_finished() = TimeUtil::GetCurrentTime();
    Save();
    PublishStatus();
    return true;
  }
  PublishStatus();
  return false;
}

absl::StatusOr<v1::RolloutStatus> RolloutController::Control(
    const v1::ControlRolloutRequest& request, const std::string& who) {
  if (request.action() == v1::ControlRolloutRequest::ACTION_UNSPECIFIED) {
    return absl::InvalidArgumentError("action: required (PROMOTE, PAUSE, RESUME or ABORT)");
  }
  if (store_.Shared()) Follow(true);
  if (!leader_) {
    return absl::FailedPreconditionError(
        "action: this control-plane replica does not lead rollouts; send it to the leader "
        "(the replica whose onedomain_controlplane_leader is 1)");
  }
  if (!IsActive(status_.state())) {
    return absl::FailedPreconditionError(
        status_.version() == 0
            ? std::string("action: no rollout is running")
            : str::Cat("action: no rollout is running (the last one, version ", status_.version(),
                       ", ended ", rollout::StateName(status_.state()), ")"));
  }
  switch (request.action()) {
    case v1::ControlRolloutRequest::PROMOTE:
      promote_ = true;
      status_.set_state(v1::ROLLOUT_STATE_RUNNING);
      log::Info("rollout", str::Cat("version ", status_.version(), ": promote by ", who));
      Tick();
      break;
    case v1::ControlRolloutRequest::PAUSE:
      status_.set_state(v1::ROLLOUT_STATE_PAUSED);
      status_.set_detail(str::Cat("paused by ", who));
      log::Info("rollout", str::Cat("version ", status_.version(), ": paused by ", who));
      Save();
      break;
    case v1::ControlRolloutRequest::RESUME:
      status_.set_state(v1::ROLLOUT_STATE_RUNNING);
      log::Info("rollout", str::Cat("version ", status_.version(), ": resumed by ", who));
      Save();
      break;
    case v1::ControlRolloutRequest::ABORT:
      Undo(v1::ROLLOUT_STATE_ABORTED, "RolloutAbort",
           str::Cat("aborted by ", who,
                    request.reason().empty() ? std::string() : str::Cat(": ", request.reason())));
      break;
    default:
      return absl::InvalidArgumentError("action: unknown");
  }
  PublishStatus();
  return status_;
}

void RolloutController::SetLeader(bool leader) {
  if (leader == leader_) return;
  leader_ = leader;
  log::Info("rollout",
            leader ? "this replica leads rollouts" : "this replica no longer leads rollouts");
  // A former leader stops judging at once; a new one adopts at its next tick.
  if (!leader) version_snapshot_.reset();
  last_follow_ = {};
}

std::string RolloutController::SplitKey(const v1::RolloutStatus& st) {
  return str::Cat(st.version(), "/", st.base_version(), "/", str::Join(st.canary_nodes(), ","));
}

std::shared_ptr<const v1::Snapshot> RolloutController::SnapshotOf(uint64_t version) {
  if (version == 0) return nullptr;
  if (auto it = snapshot_cache_.find(version); it != snapshot_cache_.end()) return it->second;
  if (auto latest = store_.Latest(); latest && latest->version() == version) {
    snapshot_cache_[version] = latest;
    return latest;
  }
  auto got = store_.Get(version);
  if (!got.ok()) {
    log::Warn("rollout", str::Cat("cannot read version ", version, ": ", got.status().message()));
    return nullptr;
  }
  auto snapshot = std::make_shared<const v1::Snapshot>(std::move(*got));
  // Two versions matter at a time (base and canary): keep the cache that small.
  while (snapshot_cache_.size() >= 4) snapshot_cache_.erase(snapshot_cache_.begin());
  snapshot_cache_[version] = snapshot;
  return snapshot;
}

void RolloutController::ApplyLocal(const v1::RolloutStatus& st) {
  if (IsActive(st.state())) {
    const std::string key = SplitKey(st);
    if (key == applied_split_) return;
    auto base = SnapshotOf(st.base_version());
    auto version = SnapshotOf(st.version());
    if (base == nullptr || version == nullptr) return;  // retried at the next follow
    fleet_.SetTargets(std::move(base), std::move(version),
                      std::set<std::string>(st.canary_nodes().begin(), st.canary_nodes().end()));
    applied_split_ = key;
    return;
  }
  if (applied_split_.empty()) return;
  // Ended: every node gets what won. Never the latest version blindly: between a rollback
  // being saved and its revert being committed, the latest is the version being undone.
  const auto latest = store_.Latest();
  std::shared_ptr<const v1::Snapshot> target;
  switch (st.state()) {
    case v1::ROLLOUT_STATE_SUCCEEDED:
      target = latest && latest->version() >= st.version() ? latest : SnapshotOf(st.version());
      break;
    case v1::ROLLOUT_STATE_ROLLED_BACK:
    case v1::ROLLOUT_STATE_ABORTED:
      target = st.revert_version() != 0 && latest && latest->version() >= st.revert_version()
                   ? latest
                   : SnapshotOf(st.base_version());
      break;
    default:
      // Superseded by a change delivered now: wait until it arrives (the split holds).
      if (latest && latest->version() > st.version()) target = latest;
      break;
  }
  if (target == nullptr) return;
  fleet_.Publish(std::move(target));
  applied_split_.clear();
}

void RolloutController::Follow(bool force) {
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_follow_ < std::chrono::milliseconds(500)) return;
  last_follow_ = now;
  auto saved = store_.LoadRollout();
  if (!saved.ok()) return;  // none yet, or the store is away: keep what we have
  const bool owned = version_snapshot_ != nullptr && IsActive(status_.state());
  if (owned && saved->version() == status_.version() && IsActive(saved->state())) {
    return;  // our own rollout: what we hold is at least as new as what we saved
  }
  if (leader_ && IsActive(saved->state())) {
    Adopt(*saved);
    return;
  }
  version_snapshot_.reset();
  status_ = std::move(*saved);
  ApplyLocal(status_);
  PublishStatus();
}

void RolloutController::Adopt(const v1::RolloutStatus& saved) {
  auto base = SnapshotOf(saved.base_version());
  auto version = SnapshotOf(saved.version());
  if (base == nullptr || version == nullptr) return;  // retried at the next follow
  status_ = saved;
  base_snapshot_ = std::move(base);
  version_snapshot_ = std::move(version);
  started_ = std::chrono::steady_clock::now();
  remembered_ = {};
  windows_.clear();
  promote_ = false;
  log::Warn("rollout", str::Cat("adopting the rollout of version ", status_.version(), " at wave ",
                                status_.wave() + 1, "/", status_.waves_size(),
                                " (this replica leads; the wave's bake starts over)"));
  if (status_.canary_nodes_size() == 0) {
    StartWave(status_.wave());
    return;
  }
  wave_started_ = started_;
  *status_.mutable_wave_started() = TimeUtil::GetCurrentTime();
  fleet_.SetTargets(
      base_snapshot_, version_snapshot_,
      std::set<std::string>(status_.canary_nodes().begin(), status_.canary_nodes().end()));
  applied_split_ = SplitKey(status_);
  Save();
  PublishStatus();
}

bool RolloutController::HoldsBack(const std::shared_ptr<const v1::Snapshot>& snapshot) {
  if (!store_.Shared() || snapshot == nullptr) return false;
  snapshot_cache_[snapshot->version()] = snapshot;
  Follow(true);
  return IsActive(status_.state()) && status_.version() == snapshot->version();
}

void RolloutController::Save() {
  if (absl::Status s = store_.SaveRollout(status_); !s.ok()) {
    log::Error("rollout", str::Cat("cannot save the rollout state: ", s.message()));
  }
}

void RolloutController::PublishStatus() {
  const bool active = IsActive(status_.state());
  state_gauge_.Set(static_cast<double>(status_.state()));
  wave_gauge_.Set(active ? status_.wave() + 1 : 0);
  running_seconds_.Set(
      active ? std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count()
             : 0);
  if (active) budget_seconds_.Set(Seconds(status_.policy().budget()));
  for (const v1::GateValue& g : status_.gates()) {
    gate_values_.Add({{"gate", g.gate()}, {"side", "canary"}}).Set(g.canary());
    gate_values_.Add({{"gate", g.gate()}, {"side", "baseline"}}).Set(g.baseline());
  }
  std::lock_guard lock(mu_);
  published_ = status_;
}

v1::RolloutStatus RolloutController::Status() const {
  std::lock_guard lock(mu_);
  return published_;
}

bool RolloutController::Active() const {
  std::lock_guard lock(mu_);
  return IsActive(published_.state());
}

}  // namespace onedomain::controlplane
