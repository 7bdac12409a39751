#pragma once

// The ConfigDiscovery gRPC service: one callback bidi reactor per node stream, so thousands
// of nodes cost no thread each. Each stream feeds the Fleet (Hello, Ack, Nack, reports) and
// sends what the Fleet offers it (latest wins).
//
// The stream is the whole config, so it is authenticated before anything is sent: a bearer
// token of role `node` (whose name is the node id or `*` pattern it may claim) or a TLS
// client certificate verified against grpc.client_ca_file, unless allow_unauthenticated.
// Hello is validated (node id charset and length, field sizes) before the Fleet sees it.
// Every refusal is counted through `on_refused` with its gRPC code name.

#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "onedomain/v1/config_discovery.grpc.pb.h"

namespace onedomain::controlplane {

class Fleet;
class TokenSet;

// Checks a Hello's fields; INVALID_ARGUMENT naming the field. Pure.
absl::Status ValidateHello(const v1::Hello& hello);

// Whether `node_id` matches a node token's name: an exact id, or a pattern where `*` matches
// any run of characters.
bool NodeIdMatches(std::string_view pattern, std::string_view node_id);

class DiscoveryService final : public v1::ConfigDiscovery::CallbackService {
 public:
  struct Options {
    bool allow_unauthenticated = false;
    // Told the gRPC code name of every refused stream ("UNAUTHENTICATED", ...). Any thread.
    std::function<void(std::string_view code)> on_refused;
  };

  // `tokens` must outlive the service.
  DiscoveryService(Fleet& fleet, const TokenSet& tokens, Options options)
      : fleet_(fleet), tokens_(tokens), options_(std::move(options)) {}

  grpc::ServerBidiReactor<v1::NodeMessage, v1::ControlMessage>* Stream(
      grpc::CallbackServerContext* context) override;

 private:
  Fleet& fleet_;
  const TokenSet& tokens_;
  const Options options_;
};

}  // namespace onedomain::controlplane
