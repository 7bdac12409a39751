#pragma once

// The ConfigDiscovery gRPC service: one callback bidi reactor per node stream, so thousands
// of nodes cost no thread each. Each stream feeds the Fleet (Hello, Ack, Nack, reports) and
// sends what the Fleet offers it (latest wins).

#include "onedomain/v1/config_discovery.grpc.pb.h"

namespace onedomain::controlplane {

class Fleet;

class DiscoveryService final : public v1::ConfigDiscovery::CallbackService {
 public:
  explicit DiscoveryService(Fleet& fleet) : fleet_(fleet) {}

  grpc::ServerBidiReactor<v1::NodeMessage, v1::ControlMessage>* Stream(
      grpc::CallbackServerContext* context) override;

 private:
  Fleet& fleet_;
};

}  // namespace onedomain::controlplane
