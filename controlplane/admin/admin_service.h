#pragma once

// The Admin gRPC service: authenticates every call (bearer token → principal with a role),
// authorises it by role, counts it, and runs it on the admin executor so commits are
// serialised and reactions never block.

#include <functional>

#include "controlplane/auth/tokens.h"
#include "onedomain/v1/admin.grpc.pb.h"

namespace onedomain::controlplane {

class ConfigManager;
class ControlplaneMetrics;
class Fleet;
class RolloutController;
class SerialExecutor;
class TokenSet;

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `list_nodes`, when set, answers ListNodes (the fleet across replicas); else the Fleet.
  // `rollouts` may be null (no rollouts: GetRollout answers an empty status).
  AdminService(const TokenSet& tokens, ConfigManager& manager, Fleet& fleet,
               SerialExecutor& executor, ControlplaneMetrics& metrics,
               std::function<v1::ListNodesResponse()> list_nodes = {},
               RolloutController* rollouts = nullptr)
      : tokens_(tokens),
        manager_(manager),
        fleet_(fleet),
        executor_(executor),
        metrics_(metrics),
        list_nodes_(std::move(list_nodes)),
        rollouts_(rollouts) {}

  grpc::ServerUnaryReactor* GetConfig(grpc::CallbackServerContext* context,
                                      const v1::GetConfigRequest* request,
                                      v1::GetConfigResponse* response) override;
  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* context,
                                  const v1::ApplyRequest* request,
                                  v1::ChangeResponse* response) override;
  grpc::ServerUnaryReactor* SetUpstream(grpc::CallbackServerContext* context,
                                        const v1::SetUpstreamRequest* request,
                                        v1::ChangeResponse* response) override;
  grpc::ServerUnaryReactor* SetCookiePolicy(grpc::CallbackServerContext* context,
                                            const v1::SetCookiePolicyRequest* request,
                                            v1::ChangeResponse* response) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* context,
                                      const v1::ListNodesRequest* request,
                                      v1::ListNodesResponse* response) override;
  grpc::ServerUnaryReactor* History(grpc::CallbackServerContext* context,
                                    const v1::HistoryRequest* request,
                                    v1::HistoryResponse* response) override;
  grpc::ServerUnaryReactor* Rollback(grpc::CallbackServerContext* context,
                                     const v1::RollbackRequest* request,
                                     v1::ChangeResponse* response) override;
  grpc::ServerUnaryReactor* GetRollout(grpc::CallbackServerContext* context,
                                       const v1::GetRolloutRequest* request,
                                       v1::RolloutStatus* response) override;
  grpc::ServerUnaryReactor* ControlRollout(grpc::CallbackServerContext* context,
                                           const v1::ControlRolloutRequest* request,
                                           v1::RolloutStatus* response) override;

 private:
  // Work: absl::Status(const Principal&), run on the executor.
  template <typename Work>
  grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* context, const char* method,
                                int required_role, Work work);

  absl::Status Admit(const v1::ChangeOptions& options, const Principal& who) const;

  const TokenSet& tokens_;
  ConfigManager& manager_;
  Fleet& fleet_;
  SerialExecutor& executor_;
  ControlplaneMetrics& metrics_;
  std::function<v1::ListNodesResponse()> list_nodes_;
  RolloutController* rollouts_;
};

}  // namespace onedomain::controlplane
