#include "controlplane/admin/admin_service.h"

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "controlplane/auth/tokens.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/rollout/rollout_controller.h"
#include "controlplane/server/config_manager.h"
#include "controlplane/server/metrics.h"
#include "controlplane/server/serial_executor.h"

namespace onedomain::controlplane {
namespace {

std::string_view CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

// absl and gRPC share the canonical code numbering.
grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Copies a StatusOr's value into the response on success.
template <typename T>
absl::Status Into(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return result.status();
  *response = std::move(*result);
  return absl::OkStatus();
}

}  // namespace

template <typename Work>
grpc::ServerUnaryReactor* AdminService::Run(grpc::CallbackServerContext* context,
                                            const char* method, int required_role, Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  std::optional<Principal> principal;
  if (it != metadata.end()) {
    principal = tokens_.AuthenticateHeader(std::string_view(it->second.data(), it->second.size()));
  }
  if (!principal) {
    metrics_.CountAdminRequest(method, "UNAUTHENTICATED");
    log::Warn("admin",
              str::Cat(method, " from ", context->peer(), ": missing or unknown bearer token"));
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                 "authorization: a valid `Bearer TOKEN` is required"));
    return reactor;
  }
  if (static_cast<int>(principal->role) < required_role) {
    metrics_.CountAdminRequest(method, "PERMISSION_DENIED");
    log::Warn("admin", str::Cat(method, " by ", principal->name, ": role ",
                                RoleName(principal->role), " is not enough"));
    reactor->Finish(
        grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                     str::Cat(method, " needs role ", RoleName(static_cast<Role>(required_role)),
                              "; token '", principal->name, "' has ", RoleName(principal->role))));
    return reactor;
  }
  executor_.Post([this, reactor, method, who = *principal, work = std::move(work)] {
    grpc::Status status;
    try {
      status = ToGrpc(work(who));
    } catch (const std::exception& e) {
      log::Error("admin", str::Cat(method, " threw: ", e.what()));
      status = grpc::Status(grpc::StatusCode::INTERNAL, "internal error");
    }
    metrics_.CountAdminRequest(method, CodeName(status.error_code()));
    reactor->Finish(status);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::GetConfig(grpc::CallbackServerContext* context,
                                                  const v1::GetConfigRequest* request,
                                                  v1::GetConfigResponse* response) {
  return Run(context, "GetConfig", static_cast<int>(Role::kRead),
             [this, request, response](const Principal&) {
               return Into(manager_.Get(*request), response);
             });
}

grpc::ServerUnaryReactor* AdminService::Apply(grpc::CallbackServerContext* context,
                                              const v1::ApplyRequest* request,
                                              v1::ChangeResponse* response) {
  return Run(context, "Apply", static_cast<int>(Role::kAdmin),
             [this, request, response](const Principal& who) {
               if (absl::Status s = Admit(request->options(), who); !s.ok()) return s;
               return Into(manager_.Apply(*request, who.name), response);
             });
}

grpc::ServerUnaryReactor* AdminService::SetUpstream(grpc::CallbackServerContext* context,
                                                    const v1::SetUpstreamRequest* request,
                                                    v1::ChangeResponse* response) {
  return Run(context, "SetUpstream", static_cast<int>(Role::kOperate),
             [this, request, response](const Principal& who) {
               if (absl::Status s = Admit(request->options(), who); !s.ok()) return s;
               return Into(manager_.SetUpstream(*request, who.name), response);
             });
}

grpc::ServerUnaryReactor* AdminService::SetCookiePolicy(grpc::CallbackServerContext* context,
                                                        const v1::SetCookiePolicyRequest* request,
                                                        v1::ChangeResponse* response) {
  return Run(context, "SetCookiePolicy", static_cast<int>(Role::kAdmin),
             [this, request, response](const Principal& who) {
               if (absl::Status s = Admit(request->options(), who); !s.ok()) return s;
               return Into(manager_.SetCookiePolicy(*request, who.name), response);
             });
}

grpc::ServerUnaryReactor* AdminService::ListNodes(grpc::CallbackServerContext* context,
                                                  const v1::ListNodesRequest* /*request*/,
                                                  v1::ListNodesResponse* response) {
  return Run(context, "ListNodes", static_cast<int>(Role::kRead),
             [this, response](const Principal&) {
               *response = list_nodes_ ? list_nodes_() : fleet_.List();
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminService::History(grpc::CallbackServerContext* context,
                                                const v1::HistoryRequest* request,
                                                v1::HistoryResponse* response) {
  return Run(context, "History", static_cast<int>(Role::kRead),
             [this, request, response](const Principal&) {
               return Into(manager_.History(*request), response);
             });
}

grpc::ServerUnaryReactor* AdminService::Rollback(grpc::CallbackServerContext* context,
                                                 const v1::RollbackRequest* request,
                                                 v1::ChangeResponse* response) {
  return Run(context, "Rollback", static_cast<int>(Role::kOperate),
             [this, request, response](const Principal& who) {
               if (absl::Status s = Admit(request->options(), who); !s.ok()) return s;
               return Into(manager_.Rollback(*request, who.name), response);
             });
}

absl::Status AdminService::Admit(const v1::ChangeOptions& options, const Principal& who) const {
  if (rollouts_ == nullptr) return absl::OkStatus();
  return rollouts_->Admit(options, who.role == Role::kAdmin);
}

grpc::ServerUnaryReactor* AdminService::GetRollout(grpc::CallbackServerContext* context,
                                                   const v1::GetRolloutRequest* /*request*/,
                                                   v1::RolloutStatus* response) {
  return Run(context, "GetRollout", static_cast<int>(Role::kRead),
             [this, response](const Principal&) {
               if (rollouts_ != nullptr) *response = rollouts_->Status();
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* AdminService::ControlRollout(grpc::CallbackServerContext* context,
                                                       const v1::ControlRolloutRequest* request,
                                                       v1::RolloutStatus* response) {
  return Run(context, "ControlRollout", static_cast<int>(Role::kOperate),
             [this, request, response](const Principal& who) -> absl::Status {
               if (rollouts_ == nullptr) return absl::UnimplementedError("rollouts: not enabled");
               return Into(rollouts_->Control(*request, who.name), response);
             });
}

}  // namespace onedomain::controlplane
