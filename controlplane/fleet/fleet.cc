#include "controlplane/fleet/fleet.h"

#include <algorithm>
#include <optional>

#include "common/config/snapshot_hash.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "google/protobuf/util/time_util.h"

namespace onedomain::controlplane {
namespace {

constexpr int kMaxReportKeys = 1000;

}  // namespace

Fleet::Fleet(std::chrono::seconds forget_after, Clock clock, size_t max_nodes)
    : forget_after_(forget_after),
      clock_(std::move(clock)),
      max_nodes_(std::max<size_t>(max_nodes, 1)) {}

void Fleet::SetPushObserver(PushObserver observer) {
  std::lock_guard lock(mu_);
  push_observer_ = std::move(observer);
}

void Fleet::SetAheadObserver(AheadObserver observer) {
  std::lock_guard lock(mu_);
  ahead_observer_ = std::move(observer);
}

NodeRecord* Fleet::FindLocked(NodeConnection* connection) {
  const auto it = by_connection_.find(connection);
  if (it == by_connection_.end()) return nullptr;
  return &nodes_.at(it->second);
}

Fleet::Target Fleet::MakeTarget(const std::shared_ptr<const v1::Snapshot>& snapshot) {
  Target t;
  if (snapshot == nullptr) return t;
  auto push = std::make_shared<v1::ControlMessage>();
  *push->mutable_push()->mutable_snapshot() = *snapshot;
  push->mutable_push()->set_nonce(str::Cat("v", snapshot->version()));
  t.push = std::move(push);
  t.version = snapshot->version();
  t.hash = config::SnapshotHash(*snapshot);
  return t;
}

const Fleet::Target& Fleet::TargetLocked(const std::string& node_id) const {
  if (canary_.push != nullptr && canary_nodes_.count(node_id) != 0) return canary_;
  return stable_;
}

uint64_t Fleet::TargetVersion(const std::string& node_id) const {
  std::lock_guard lock(mu_);
  return TargetLocked(node_id).version;
}

void Fleet::OfferLocked(NodeRecord& node) {
  const Target& target = TargetLocked(node.hello.node_id());
  if (node.connection == nullptr || target.push == nullptr) return;
  if (node.refused.count(target.version) != 0) return;  // never re-push a refused version
  if (node.version_sent == target.version) return;
  node.version_sent = target.version;
  node.connection->Offer(target.push);
}

absl::Status Fleet::Attach(NodeConnection* connection, const v1::Hello& hello) {
  std::lock_guard lock(mu_);
  ForgetLocked();
  const std::string& id = hello.node_id();
  if (nodes_.count(id) == 0 && nodes_.size() >= max_nodes_) {
    // Make room by forgetting the node that left longest ago; never drop a connected one.
    auto oldest = nodes_.end();
    for (auto it = nodes_.begin(); it != nodes_.end(); ++it) {
      if (it->second.connection != nullptr) continue;
      if (oldest == nodes_.end() || it->second.disconnected_at < oldest->second.disconnected_at) {
        oldest = it;
      }
    }
    if (oldest == nodes_.end()) {
      return absl::ResourceExhaustedError(
          str::Cat("hello.node_id: the control plane already tracks ", nodes_.size(),
                   " connected nodes (nodes.max_nodes)"));
    }
    nodes_.erase(oldest);
  }
  NodeRecord& node = nodes_[id];
  if (node.connection != nullptr && node.connection != connection) {
    log::Warn("fleet", str::Cat("node ", id, " connected again; closing its older stream"));
    by_connection_.erase(node.connection);
    node.connection->Close(/*ABORTED=*/10, "replaced by a newer stream from the same node id");
  }
  node.hello = hello;
  node.connection = connection;
  node.last_seen = std::chrono::system_clock::now();
  // A new stream starts with a clean slate: what an earlier stream (perhaps an impostor's)
  // refused says nothing about this one, and a refused version is worth one more try.
  node.version_nacked = 0;
  node.nack_error.clear();
  node.refused.clear();
  node.resent_after_ack = false;
  node.content_hash = hello.content_hash();
  node.divergence.clear();
  // What the node serves now counts as sent: it needs nothing older, and a fresh stream
  // must get the latest even if an earlier stream was sent it but died before answering.
  node.version_sent = hello.serving_version();
  node.version_acked = hello.serving_version();
  const Target& target = TargetLocked(id);
  if (hello.serving_version() == target.version && !target.hash.empty() &&
      !hello.content_hash().empty() && hello.content_hash() != target.hash) {
    node.divergence = str::Cat("serves other content as version ", target.version);
    node.version_sent = 0;  // push the latest again
    node.version_acked = 0;
    log::Warn("fleet", str::Cat("node ", id, " serves version ", target.version,
                                " with content hash ", str::EscapeForLog(hello.content_hash(), 64),
                                ", not ", target.hash, "; pushing it again"));
  }
  const uint64_t newest = NewestVersionLocked();
  if (hello.serving_version() > newest && newest != 0 && ahead_observer_) {
    ahead_observer_(id, hello.serving_version());
  }
  by_connection_[connection] = id;
  log::Info("fleet", str::Cat("node ", id, " connected (serving version ", hello.serving_version(),
                              ", build ", str::EscapeForLog(hello.build(), 64), ")"));
  auto welcome = std::make_shared<v1::ControlMessage>();
  welcome->mutable_welcome()->set_latest_version(target.version);
  connection->Offer(std::move(welcome));  // a fresh stream: this write starts at once
  OfferLocked(node);
  return absl::OkStatus();
}

void Fleet::Detach(NodeConnection* connection) {
  std::lock_guard lock(mu_);
  NodeRecord* node = FindLocked(connection);
  if (node == nullptr) return;
  log::Info("fleet", str::Cat("node ", node->hello.node_id(), " disconnected"));
  node->connection = nullptr;
  node->disconnected_at = clock_();
  node->last_seen = std::chrono::system_clock::now();
  by_connection_.erase(connection);
  ForgetLocked();
  CheckPushesLocked();
}

void Fleet::OnAck(NodeConnection* connection, const v1::Ack& ack) {
  std::lock_guard lock(mu_);
  NodeRecord* node = FindLocked(connection);
  if (node == nullptr) return;
  node->version_acked = ack.version();
  node->last_seen = std::chrono::system_clock::now();
  if (ack.version() >= node->version_nacked) {
    node->version_nacked = 0;
    node->nack_error.clear();
  }
  // A SHA-256 in hex is 64 characters; more is not a hash, and it is kept per node.
  if (!ack.content_hash().empty()) node->content_hash = ack.content_hash().substr(0, 64);
  const Target& target = TargetLocked(node->hello.node_id());
  if (ack.version() == target.version && !ack.content_hash().empty() && !target.hash.empty()) {
    if (ack.content_hash() == target.hash) {
      node->divergence.clear();
    } else {
      node->divergence =
          str::Cat("acknowledged version ", ack.version(), " with another content hash");
      log::Warn("fleet",
                str::Cat("node ", node->hello.node_id(), " acknowledged version ", ack.version(),
                         " with content hash ", str::EscapeForLog(ack.content_hash(), 64), ", not ",
                         target.hash, node->resent_after_ack ? "" : "; pushing it again"));
      if (!node->resent_after_ack) {
        node->resent_after_ack = true;
        node->version_sent = 0;
        OfferLocked(*node);
      }
    }
  }
  CheckPushesLocked();
}

void Fleet::OnNack(NodeConnection* connection, const v1::Nack& nack) {
  std::lock_guard lock(mu_);
  NodeRecord* node = FindLocked(connection);
  if (node == nullptr) return;
  node->version_nacked = nack.version();
  // Bounded: it is kept, listed and logged.
  node->nack_error = nack.error().substr(0, 1024);
  node->refused.insert(nack.version());
  node->last_seen = std::chrono::system_clock::now();
  log::Warn("fleet", str::Cat("node ", node->hello.node_id(), " refused version ", nack.version(),
                              ": ", str::EscapeForLog(nack.error(), 512)));
  CheckPushesLocked();
}

void Fleet::OnReport(NodeConnection* connection, const v1::MetricsReport& report) {
  std::lock_guard lock(mu_);
  NodeRecord* node = FindLocked(connection);
  if (node == nullptr) return;
  if (node->has_report) {
    node->prev_report = std::move(node->report);
    node->prev_report_at = node->report_at;
    node->has_prev_report = true;
  }
  node->report = report;
  node->report_at = clock_();
  node->has_report = true;
  node->last_seen = std::chrono::system_clock::now();
  // Each map key becomes metric series: bound what one node can create. Honest nodes have
  // one key per route and status class (a few dozen) and one per upgrade result (six).
  if (report.http_requests_size() > kMaxReportKeys ||
      report.websocket_upgrades_size() > kMaxReportKeys) {
    node->report.clear_http_requests();
    node->report.clear_websocket_upgrades();
    log::Warn("fleet", str::Cat("node ", node->hello.node_id(), " sent a report with ",
                                report.http_requests_size(), " request and ",
                                report.websocket_upgrades_size(), " upgrade keys (at most ",
                                kMaxReportKeys, "); their counters are dropped"));
  }
}

void Fleet::Publish(std::shared_ptr<const v1::Snapshot> snapshot) {
  SetTargets(std::move(snapshot), nullptr, {});
}

void Fleet::SetTargets(std::shared_ptr<const v1::Snapshot> stable,
                       std::shared_ptr<const v1::Snapshot> canary,
                       std::set<std::string> canary_nodes) {
  // Serialized and hashed outside the lock; unchanged targets are reused.
  const uint64_t stable_version = stable ? stable->version() : 0;
  const uint64_t canary_version = canary ? canary->version() : 0;
  std::optional<Target> new_stable;
  std::optional<Target> new_canary;
  {
    std::lock_guard lock(mu_);
    if (stable_version != stable_.version) new_stable.emplace();
    if (canary_version != canary_.version) new_canary.emplace();
  }
  if (new_stable) *new_stable = MakeTarget(stable);
  if (new_canary) *new_canary = MakeTarget(canary);
  std::lock_guard lock(mu_);
  if (new_stable) {
    stable_ = std::move(*new_stable);
    if (stable_.version != 0) pending_pushes_.emplace(stable_.version, clock_());
  }
  if (new_canary) {
    canary_ = std::move(*new_canary);
    if (canary_.version != 0) pending_pushes_.emplace(canary_.version, clock_());
  }
  canary_nodes_ = canary_.push != nullptr ? std::move(canary_nodes) : std::set<std::string>{};
  for (auto& [id, node] : nodes_) OfferLocked(node);
  CheckPushesLocked();
}

void Fleet::CheckPushesLocked() {
  for (auto it = pending_pushes_.begin(); it != pending_pushes_.end();) {
    const uint64_t version = it->first;
    bool any_connected = false;
    bool all_answered = true;
    for (const auto& [id, node] : nodes_) {
      if (node.connection == nullptr) continue;
      if (TargetLocked(id).version < version) continue;  // not meant to get it (yet)
      any_connected = true;
      if (node.version_acked < version && node.refused.count(version) == 0) {
        all_answered = false;
        break;
      }
    }
    if (!all_answered) {
      ++it;
      continue;
    }
    if (any_connected && push_observer_) {
      push_observer_(std::chrono::duration<double>(clock_() - it->second).count());
    }
    it = pending_pushes_.erase(it);
  }
}

bool Fleet::ExpiredLocked(const NodeRecord& node) const {
  return node.connection == nullptr && clock_() - node.disconnected_at > forget_after_;
}

void Fleet::ForgetLocked() {
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (ExpiredLocked(it->second)) {
      it = nodes_.erase(it);
    } else {
      ++it;
    }
  }
}

uint64_t Fleet::LastKnownGoodLocked() const {
  uint64_t good = 0;
  bool any = false;
  for (const auto& [id, node] : nodes_) {
    if (node.connection == nullptr) continue;
    good = any ? std::min(good, node.version_acked) : node.version_acked;
    any = true;
  }
  return good;
}

uint64_t Fleet::LastKnownGood() const {
  std::lock_guard lock(mu_);
  return LastKnownGoodLocked();
}

v1::ListNodesResponse Fleet::List() const {
  std::lock_guard lock(mu_);
  v1::ListNodesResponse out;
  out.set_latest_version(NewestVersionLocked());
  out.set_last_known_good_version(LastKnownGoodLocked());
  for (const auto& [id, node] : nodes_) {
    if (ExpiredLocked(node)) continue;  // erased at the next Attach or Detach
    v1::NodeStatus* s = out.add_nodes();
    s->set_node_id(id);
    s->set_pod(node.hello.pod());
    s->set_zone(node.hello.zone());
    s->set_build(node.hello.build());
    s->set_connected(node.connection != nullptr);
    s->set_version_sent(node.version_sent);
    s->set_version_acked(node.version_acked);
    s->set_version_nacked(node.version_nacked);
    s->set_nack_error(node.nack_error);
    *s->mutable_last_seen() = google::protobuf::util::TimeUtil::TimeTToTimestamp(
        std::chrono::system_clock::to_time_t(node.last_seen));
    s->set_downstream_connections_active(node.report.downstream_connections_active());
    s->set_websocket_connections_active(node.report.websocket_connections_active());
    uint64_t upgrades = 0;
    for (const auto& [result, count] : node.report.websocket_upgrades()) upgrades += count;
    s->set_websocket_upgrades_total(upgrades);
    s->set_content_hash(node.content_hash);
    s->set_divergence(node.divergence);
    if (node.has_report) {
      v1::NodeCounters* c = s->mutable_counters();
      for (const auto& [key, n] : node.report.http_requests()) {
        c->set_requests(c->requests() + n);
        if (key.size() >= 4 && key.compare(key.size() - 4, 4, "|5xx") == 0) {
          c->set_http_5xx(c->http_5xx() + n);
        }
      }
      c->set_upstream_connect_failures(node.report.upstream_connect_failures());
      c->set_websocket_closes_abnormal(node.report.websocket_closes_abnormal());
      c->set_config_version(node.report.config_version());
      c->set_start_seconds(node.report.start_time().seconds());
    }
  }
  return out;
}

std::vector<NodeRecord> Fleet::Nodes() const {
  std::lock_guard lock(mu_);
  std::vector<NodeRecord> out;
  out.reserve(nodes_.size());
  for (const auto& [id, node] : nodes_) {
    if (!ExpiredLocked(node)) out.push_back(node);
  }
  return out;
}

}  // namespace onedomain::controlplane
