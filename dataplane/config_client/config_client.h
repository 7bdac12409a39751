#pragma once

// The data plane's side of the config stream. Runs on its own thread, apart from the
// workers: connects to the control plane with exponential backoff and jitter, says Hello,
// applies each pushed snapshot through `apply` (which returns once every worker switched, or
// with the reason it cannot), answers ACK or NACK with the push's nonce, caches each accepted
// snapshot on disk, and streams a MetricsReport every report_interval. The node keeps serving
// its last good snapshot through control-plane outages. Hello and each Ack carry the content
// hash of the snapshot served (config::SnapshotHash); the stream carries the node token read
// from source.token_file at every connect (never logged).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "onedomain/v1/bootstrap.pb.h"
#include "onedomain/v1/config_discovery.pb.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace onedomain::dataplane {

class ConfigClient {
 public:
  struct Callbacks {
    // Validates and applies a snapshot on every worker; blocks until done. Called on the
    // client thread only.
    std::function<absl::Status(std::shared_ptr<const v1::Snapshot>)> apply;
    // Cumulative counters for a MetricsReport. Called on the client's report thread.
    std::function<v1::MetricsReport()> report;
    // Stream state changes (for the onedomain_controlplane_connected gauge).
    std::function<void(bool connected)> connected;
  };

  // `serving_version` is the version the node serves at start (cache or bootstrap), sent in
  // Hello with `serving_hash` (its content hash, "" if unknown) so the control plane does
  // not push what the node already has — and does when the content differs.
  ConfigClient(v1::ControlPlaneSource source, v1::Node node, uint64_t serving_version,
               Callbacks callbacks, std::string serving_hash = "");
  ~ConfigClient();  // Stop()

  ConfigClient(const ConfigClient&) = delete;
  ConfigClient& operator=(const ConfigClient&) = delete;

  void Start();
  // Cancels the stream and joins the threads. Idempotent.
  void Stop();

  bool connected() const { return connected_.load(); }
  uint64_t serving_version() const { return serving_version_.load(); }

  // The on-disk cache of the last accepted snapshot ("none" disables it). LoadCache:
  // NOT_FOUND when there is no file, DATA_LOSS when it is empty or unreadable.
  static std::string CachePath(const v1::ControlPlaneSource& source);
  static absl::StatusOr<v1::Snapshot> LoadCache(const std::string& path);
  static absl::Status SaveCache(const std::string& path, const v1::Snapshot& snapshot);

 private:
  void Run();
  // One stream's life: returns when it ends. True when it got at least one message (the
  // backoff then starts over).
  bool RunStream();
  // Sleeps up to `d` or until Stop.
  bool SleepFor(std::chrono::milliseconds d);

  const v1::ControlPlaneSource source_;
  const v1::Node node_;
  const Callbacks callbacks_;
  std::atomic<uint64_t> serving_version_;
  std::atomic<bool> connected_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::string serving_hash_;                // guarded by mu_
  grpc::ClientContext* context_ = nullptr;  // the live stream's, for cancel on Stop
  std::thread thread_;

  struct Channel;
  std::unique_ptr<Channel> channel_;
};

}  // namespace onedomain::dataplane
