#pragma once

// The control plane's view of the fleet: which nodes are connected, what each was sent,
// acknowledged and refused, and their latest metrics reports. Decides what each node is
// pushed: its target snapshot (latest wins, never a queue), except a version that node
// refused (NACKed) — that one is never pushed to it again. Outside a rollout every node's
// target is the newest committed snapshot; during one (SetTargets) the canary nodes' target
// is the version rolled out and every other node's — new nodes included — the stable one.
//
// Hostile peers are bounded here: at most max_nodes node ids are tracked (the
// longest-disconnected one is forgotten first), a departed node's record and metric series
// go away forget_after after it left, and a node's NACK state starts afresh on every new
// stream, so a NACK sent by an impostor does not outlive the real node's reconnect.
//
// Content: each node reports the hash of the snapshot it serves (Hello, Ack). When it serves
// the latest version number with other content, the latest is pushed to it again (once per
// stream for an Ack, so two builds that serialize differently cannot loop) and the record
// shows the divergence.
//
// Knows nothing of gRPC: a connection is the NodeConnection seam, implemented by the
// discovery stream reactor and by fakes in tests. Thread-safe: every method takes the one
// mutex; NodeConnection::Offer/Close are called with it held, so they must not call back.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "onedomain/v1/admin.pb.h"
#include "onedomain/v1/config_discovery.pb.h"

namespace onedomain::controlplane {

// One node's stream, as the fleet sees it.
class NodeConnection {
 public:
  virtual ~NodeConnection() = default;
  // Queue `push` for sending, replacing any push not yet started (latest wins). Non-blocking.
  virtual void Offer(std::shared_ptr<const v1::ControlMessage> push) = 0;
  // End the stream with `code` and `message` (e.g. replaced by a newer stream).
  virtual void Close(int code, std::string message) = 0;
};

struct NodeRecord {
  v1::Hello hello;
  NodeConnection* connection = nullptr;  // null while disconnected
  uint64_t version_sent = 0;
  uint64_t version_acked = 0;
  uint64_t version_nacked = 0;
  std::string nack_error;
  std::set<uint64_t> refused;     // every version this node NACKed on its current stream
  std::string content_hash;       // what the node last said it serves
  std::string divergence;         // non-empty while its content differs from ours
  bool resent_after_ack = false;  // one resend per stream when an Ack's hash differs
  std::chrono::system_clock::time_point last_seen;
  std::chrono::steady_clock::time_point disconnected_at;
  v1::MetricsReport report;
  bool has_report = false;
  // The report before `report`, and when each arrived (rates for the fleet console).
  v1::MetricsReport prev_report;
  bool has_prev_report = false;
  std::chrono::steady_clock::time_point report_at;
  std::chrono::steady_clock::time_point prev_report_at;
};

class Fleet {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // Called once per version when every connected node has answered it: seconds from
  // Publish to the last answer.
  using PushObserver = std::function<void(double seconds)>;

  // Told a node id and the version it serves when that is above every published version
  // (a store restored from an older backup). Called with the fleet mutex held: must not
  // block or call back.
  using AheadObserver = std::function<void(const std::string& node_id, uint64_t version)>;

  // Disconnected nodes are forgotten `forget_after` after they left; at most `max_nodes`
  // node ids are tracked (both bound the metric series).
  explicit Fleet(std::chrono::seconds forget_after = std::chrono::seconds(300),
                 Clock clock = std::chrono::steady_clock::now, size_t max_nodes = 1000);

  void SetPushObserver(PushObserver observer);
  void SetAheadObserver(AheadObserver observer);

  // A stream said Hello (already validated). A previous stream of the same node id is closed
  // (ABORTED). RESOURCE_EXHAUSTED when the node id is new and max_nodes ids are connected.
  absl::Status Attach(NodeConnection* connection, const v1::Hello& hello);
  // The stream ended. Unknown or replaced connections are ignored.
  void Detach(NodeConnection* connection);

  void OnAck(NodeConnection* connection, const v1::Ack& ack);
  void OnNack(NodeConnection* connection, const v1::Nack& nack);
  void OnReport(NodeConnection* connection, const v1::MetricsReport& report);

  // A newly committed snapshot: offered to every connected node that did not refuse it.
  // Ends any canary split (SetTargets with no canary).
  void Publish(std::shared_ptr<const v1::Snapshot> snapshot);

  // A rollout's split: nodes in `canary_nodes` get `canary`, every other node (and every
  // node that connects later and is not listed) gets `stable`. `canary` null: no split.
  void SetTargets(std::shared_ptr<const v1::Snapshot> stable,
                  std::shared_ptr<const v1::Snapshot> canary, std::set<std::string> canary_nodes);

  // The version `node_id` is meant to serve (0 before anything was published).
  uint64_t TargetVersion(const std::string& node_id) const;

  v1::ListNodesResponse List() const;

  // Newest version ACKed by every connected node; 0 when no node is connected.
  uint64_t LastKnownGood() const;

  // Copies of the records (connected and recently disconnected), for metrics.
  std::vector<NodeRecord> Nodes() const;

 private:
  void OfferLocked(NodeRecord& node);
  void CheckPushesLocked();
  void ForgetLocked();
  bool ExpiredLocked(const NodeRecord& node) const;
  NodeRecord* FindLocked(NodeConnection* connection);
  uint64_t LastKnownGoodLocked() const;

  // What one group of nodes is pushed.
  struct Target {
    std::shared_ptr<const v1::ControlMessage> push;
    uint64_t version = 0;
    std::string hash;
  };
  static Target MakeTarget(const std::shared_ptr<const v1::Snapshot>& snapshot);
  const Target& TargetLocked(const std::string& node_id) const;
  uint64_t NewestVersionLocked() const { return std::max(stable_.version, canary_.version); }

  const std::chrono::seconds forget_after_;
  const Clock clock_;
  const size_t max_nodes_;
  mutable std::mutex mu_;
  PushObserver push_observer_;
  AheadObserver ahead_observer_;
  std::map<std::string, NodeRecord> nodes_;  // by node id
  std::map<NodeConnection*, std::string> by_connection_;
  Target stable_;  // every node not in canary_nodes_
  Target canary_;  // version 0: no rollout split
  std::set<std::string> canary_nodes_;
  // Versions published and not yet answered by every connected node, with publish time.
  std::map<uint64_t, std::chrono::steady_clock::time_point> pending_pushes_;
};

}  // namespace onedomain::controlplane
