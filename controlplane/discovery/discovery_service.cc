#include "controlplane/discovery/discovery_service.h"

#include <mutex>
#include <optional>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "controlplane/auth/tokens.h"
#include "controlplane/fleet/fleet.h"

namespace onedomain::controlplane {
namespace {

constexpr size_t kMaxNodeIdBytes = 63;
constexpr size_t kMaxHelloFieldBytes = 256;

std::string_view CodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    default:
      return "OTHER";
  }
}

// A stream refused before it started: finishes at once with `status`, reads nothing.
class RefusedStream final : public grpc::ServerBidiReactor<v1::NodeMessage, v1::ControlMessage> {
 public:
  explicit RefusedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// One node's stream. Lives from Stream() until OnDone, where it detaches from the fleet and
// deletes itself. gRPC rules kept: one read and one write in flight, reactions never block,
// Finish exactly once and only when no write is in flight.
class NodeStream final : public grpc::ServerBidiReactor<v1::NodeMessage, v1::ControlMessage>,
                         public NodeConnection {
 public:
  // `token_pattern`: the node ids the stream's token may claim; nullopt when the stream was
  // authenticated otherwise (certificate) or not at all (allow_unauthenticated).
  NodeStream(Fleet& fleet, std::optional<std::string> token_pattern, std::string peer,
             std::function<void(std::string_view)> on_refused)
      : fleet_(fleet),
        token_pattern_(std::move(token_pattern)),
        peer_(std::move(peer)),
        on_refused_(std::move(on_refused)) {
    StartRead(&incoming_);
  }

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
      if (on_refused_) on_refused_(CodeName(s.code()));
      log::Warn("discovery",
                str::Cat("node stream from ", str::EscapeForLog(peer_, 128),
                         " ended: ", str::EscapeForLog(std::string(s.message()), 512)));
      std::lock_guard lock(mu_);
      FinishLocked(grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message())));
      return;
    }
    std::lock_guard lock(mu_);
    if (!finishing_) StartRead(&incoming_);  // nothing is started after Finish
  }

  absl::Status Dispatch() {
    switch (incoming_.kind_case()) {
      case v1::NodeMessage::kHello:
        if (hello_received_) return absl::InvalidArgumentError("hello: sent twice");
        if (absl::Status s = ValidateHello(incoming_.hello()); !s.ok()) return s;
        if (token_pattern_ && !NodeIdMatches(*token_pattern_, incoming_.hello().node_id())) {
          return absl::PermissionDeniedError(
              str::Cat("hello.node_id: this token may not claim node id '",
                       incoming_.hello().node_id(), "'"));
        }
        if (absl::Status s = fleet_.Attach(this, incoming_.hello()); !s.ok()) return s;
        hello_received_ = true;
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
  const std::optional<std::string> token_pattern_;
  const std::string peer_;
  const std::function<void(std::string_view)> on_refused_;
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

absl::Status ValidateHello(const v1::Hello& hello) {
  const std::string& id = hello.node_id();
  if (id.empty()) return absl::InvalidArgumentError("hello.node_id: required");
  if (id.size() > kMaxNodeIdBytes) {
    return absl::InvalidArgumentError(
        str::Cat("hello.node_id: ", id.size(), " bytes, at most ", kMaxNodeIdBytes));
  }
  for (const char c : id) {
    if (!str::IsAlnum(c) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          "hello.node_id: only letters, digits, '.', '_' and '-' are allowed");
    }
  }
  for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"pod", &hello.pod()},
                                    {"zone", &hello.zone()},
                                    {"build", &hello.build()},
                                    {"content_hash", &hello.content_hash()}}) {
    if (value->size() > kMaxHelloFieldBytes) {
      return absl::InvalidArgumentError(
          str::Cat("hello.", name, ": ", value->size(), " bytes, at most ", kMaxHelloFieldBytes));
    }
  }
  return absl::OkStatus();
}

bool NodeIdMatches(std::string_view pattern, std::string_view node_id) {
  // Glob with '*' only, iterative with one backtrack point: linear enough for 63 bytes.
  size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < node_id.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (p < pattern.size() && pattern[p] == node_id[n]) {
      ++p;
      ++n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

grpc::ServerBidiReactor<v1::NodeMessage, v1::ControlMessage>* DiscoveryService::Stream(
    grpc::CallbackServerContext* context) {
  std::optional<std::string> token_pattern;
  bool authenticated = false;
  const auto& metadata = context->client_metadata();
  if (const auto it = metadata.find("authorization"); it != metadata.end()) {
    const auto principal =
        tokens_.AuthenticateHeader(std::string_view(it->second.data(), it->second.size()));
    if (principal && principal->role == Role::kNode) {
      token_pattern = principal->name;
      authenticated = true;
    } else if (principal) {
      if (options_.on_refused) options_.on_refused("PERMISSION_DENIED");
      log::Warn("discovery", str::Cat("node stream from ", str::EscapeForLog(context->peer(), 128),
                                      " refused: token '", principal->name, "' has role ",
                                      RoleName(principal->role), ", not node"));
      return new RefusedStream(
          grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                       str::Cat("authorization: token '", principal->name, "' has role ",
                                RoleName(principal->role), "; node streams need role node")));
    }
  }
  if (!authenticated) {
    // A client certificate the handshake verified against grpc.client_ca_file.
    const auto auth = context->auth_context();
    authenticated = auth != nullptr && auth->IsPeerAuthenticated();
  }
  if (!authenticated && !options_.allow_unauthenticated) {
    if (options_.on_refused) options_.on_refused("UNAUTHENTICATED");
    log::Warn("discovery", str::Cat("node stream from ", str::EscapeForLog(context->peer(), 128),
                                    " refused: no node token and no verified client "
                                    "certificate"));
    return new RefusedStream(grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        "authorization: a `Bearer TOKEN` of role node or a verified client certificate is "
        "required"));
  }
  return new NodeStream(fleet_, std::move(token_pattern), context->peer(), options_.on_refused);
}

}  // namespace onedomain::controlplane
