#include "controlplane/fleet/fleet.h"

#include <algorithm>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "google/protobuf/util/time_util.h"

namespace onedomain::controlplane {

Fleet::Fleet(std::chrono::seconds forget_after, Clock clock)
    : forget_after_(forget_after), clock_(std::move(clock)) {}

void Fleet::SetPushObserver(PushObserver observer) {
  std::lock_guard lock(mu_);
  push_observer_ = std::move(observer);
}

NodeRecord* Fleet::FindLocked(NodeConnection* connection) {
  const auto it = by_connection_.find(connection);
  if (it == by_connection_.end()) return nullptr;
  return &nodes_.at(it->second);
}

void Fleet::OfferLocked(NodeRecord& node) {
  if (node.connection == nullptr || latest_push_ == nullptr) return;
  if (node.refused.count(latest_version_) != 0) return;  // never re-push a refused version
  if (node.version_sent == latest_version_) return;
  node.version_sent = latest_version_;
  node.connection->Offer(latest_push_);
}

void Fleet::Attach(NodeConnection* connection, const v1::Hello& hello) {
  std::lock_guard lock(mu_);
  ForgetLocked();
  NodeRecord& node = nodes_[hello.node_id()];
  if (node.connection != nullptr && node.connection != connection) {
    log::Warn("fleet", str::Cat("node ", hello.node_id(), " connected again; closing its older "
                                "stream"));
    by_connection_.erase(node.connection);
    node.connection->Close(/*ABORTED=*/10, "replaced by a newer stream from the same node id");
  }
  node.hello = hello;
  node.connection = connection;
  node.last_seen = std::chrono::system_clock::now();
  // What the node serves now counts as sent: it needs nothing older, and a fresh stream
  // must get the latest even if an earlier stream was sent it but died before answering.
  node.version_sent = hello.serving_version();
  node.version_acked = hello.serving_version();
  by_connection_[connection] = hello.node_id();
  log::Info("fleet", str::Cat("node ", hello.node_id(), " connected (serving version ",
                              hello.serving_version(), ", build ", hello.build(), ")"));
  auto welcome = std::make_shared<v1::ControlMessage>();
  welcome->mutable_welcome()->set_latest_version(latest_version_);
  connection->Offer(std::move(welcome));  // a fresh stream: this write starts at once
  OfferLocked(node);
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
  CheckPushesLocked();
}

void Fleet::OnNack(NodeConnection* connection, const v1::Nack& nack) {
  std::lock_guard lock(mu_);
  NodeRecord* node = FindLocked(connection);
  if (node == nullptr) return;
  node->version_nacked = nack.version();
  node->nack_error = nack.error();
  node->refused.insert(nack.version());
  node->last_seen = std::chrono::system_clock::now();
  log::Warn("fleet", str::Cat("node ", node->hello.node_id(), " refused version ", nack.version(),
                              ": ", nack.error()));
  CheckPushesLocked();
}

void Fleet::OnReport(NodeConnection* connection, const v1::MetricsReport& report) {
  std::lock_guard lock(mu_);
  NodeRecord* node = FindLocked(connection);
  if (node == nullptr) return;
  node->report = report;
  node->has_report = true;
  node->last_seen = std::chrono::system_clock::now();
}

void Fleet::Publish(std::shared_ptr<const v1::Snapshot> snapshot) {
  auto push = std::make_shared<v1::ControlMessage>();
  *push->mutable_push()->mutable_snapshot() = *snapshot;
  push->mutable_push()->set_nonce(str::Cat("v", snapshot->version()));
  std::lock_guard lock(mu_);
  latest_push_ = std::move(push);
  latest_version_ = snapshot->version();
  pending_pushes_[latest_version_] = clock_();
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

void Fleet::ForgetLocked() {
  const auto now = clock_();
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (it->second.connection == nullptr && now - it->second.disconnected_at > forget_after_) {
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
  out.set_latest_version(latest_version_);
  out.set_last_known_good_version(LastKnownGoodLocked());
  for (const auto& [id, node] : nodes_) {
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
  }
  return out;
}

std::vector<NodeRecord> Fleet::Nodes() const {
  std::lock_guard lock(mu_);
  std::vector<NodeRecord> out;
  out.reserve(nodes_.size());
  for (const auto& [id, node] : nodes_) out.push_back(node);
  return out;
}

}  // namespace onedomain::controlplane
