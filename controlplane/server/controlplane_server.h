#pragma once

// Owns the whole control plane: store, fleet, the gRPC server (ConfigDiscovery + Admin,
// callback API), the admin executor and the HTTP endpoint (/healthz /readyz /metrics).
// Start once from main; Shutdown from the signal thread.

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "onedomain/v1/bootstrap.pb.h"

namespace onedomain::controlplane {

class ControlplaneServer {
 public:
  explicit ControlplaneServer(v1::ControlplaneConfig config);
  ~ControlplaneServer();

  // Opens the store (seeding it if empty), loads tokens, starts serving. On error nothing
  // keeps running.
  absl::Status Start();

  uint16_t grpc_port() const;
  uint16_t http_port() const;

  // Stops accepting, ends node streams and admin calls (with a short grace), joins threads.
  void Shutdown();

  // Everything the server owns; defined in the .cc (public only so file-local helpers there
  // can take it).
  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace onedomain::controlplane
