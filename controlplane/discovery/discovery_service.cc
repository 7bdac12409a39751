#include "controlplane/discovery/discovery_service.h"

#include <mutex>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "controlplane/fleet/fleet.h"

namespace onedomain::controlplane {
namespace {

// One node's stream. Lives from Stream() until OnDone, where it detaches from the fleet and
// deletes itself. gRPC rules kept: one read and one write in flight, reactions never block,
// Finish exactly once and only when no write is in flight.
class NodeStream final : public grpc::ServerBidiReactor<v1::NodeMessage, v1::ControlMessage>,
                         public NodeConnection {
 public:
  explicit NodeStream(Fleet& fleet) : fleet_(fleet) { StartRead(&incoming_); }

  // NodeConnection — called by the fleet with its mutex held, from any thread.
  void Offer(std::shared_ptr<const v1::ControlMessage> push) override {
    std::lock_guard lock(mu_);
    if (finishing_) return;
    if (writing_ != nullptr) {
      pending_ = std::move(push);  // latest wins: an unsent older push is dropped
      return;
    }
    writing_ = std::move(push);
    StartWrite(writing_.get());
  }

  void Close(int code, std::string message) override {
    std::lock_guard lock(mu_);
    FinishLocked(grpc::Status(static_cast<grpc::StatusCode>(code), std::move(message)));
  }

 private:
  void OnReadDone(bool ok) override {
    if (!ok) {
      // The node closed its side or the stream broke.
      std::lock_guard lock(mu_);
      FinishLocked(grpc::Status::OK);
      return;
    }
    if (absl::Status s = Dispatch(); !s.ok()) {
      std::lock_guard lock(mu_);
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
      return;
    }
    std::lock_guard lock(mu_);
    if (!finishing_) StartRead(&incoming_);  // nothing is started after Finish
  }

  absl::Status Dispatch() {
    switch (incoming_.kind_case()) {
      case v1::NodeMessage::kHello:
        if (hello_received_) return absl::InvalidArgumentError("hello: sent twice");
        if (incoming_.hello().node_id().empty()) {
          return absl::InvalidArgumentError("hello.node_id: required");
        }
        hello_received_ = true;
        fleet_.Attach(this, incoming_.hello());
        return absl::OkStatus();
      case v1::NodeMessage::kAck:
      case v1::NodeMessage::kNack:
      case v1::NodeMessage::kMetrics:
        if (!hello_received_) {
          return absl::InvalidArgumentError("hello: must be the first message of the stream");
        }
        if (incoming_.has_ack()) fleet_.OnAck(this, incoming_.ack());
        if (incoming_.has_nack()) fleet_.OnNack(this, incoming_.nack());
        if (incoming_.has_metrics()) fleet_.OnReport(this, incoming_.metrics());
        return absl::OkStatus();
      case v1::NodeMessage::KIND_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError("kind: a NodeMessage needs hello, ack, nack or metrics");
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    writing_.reset();
    if (!ok) {
      pending_.reset();
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    if (finish_deferred_) {
      finish_deferred_ = false;
      Finish(final_status_);
      return;
    }
    if (pending_ != nullptr && !finishing_) {
      writing_ = std::move(pending_);
      StartWrite(writing_.get());
    }
  }

  void OnCancel() override {
    std::lock_guard lock(mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    fleet_.Detach(this);
    delete this;
  }

  void FinishLocked(grpc::Status status) {
    if (finishing_) return;
    finishing_ = true;
    pending_.reset();
    if (writing_ != nullptr) {
      // Finish waits for the write in flight: OnWriteDone sends it.
      finish_deferred_ = true;
      final_status_ = std::move(status);
      return;
    }
    Finish(status);
  }

  Fleet& fleet_;
  v1::NodeMessage incoming_;  // only touched by the read chain: one read in flight
  bool hello_received_ = false;

  std::mutex mu_;  // guards the write side and finishing
  std::shared_ptr<const v1::ControlMessage> writing_;
  std::shared_ptr<const v1::ControlMessage> pending_;
  bool finishing_ = false;
  bool finish_deferred_ = false;
  grpc::Status final_status_;
};

}  // namespace

grpc::ServerBidiReactor<v1::NodeMessage, v1::ControlMessage>* DiscoveryService::Stream(
    grpc::CallbackServerContext* /*context*/) {
  return new NodeStream(fleet_);
}

}  // namespace onedomain::controlplane
