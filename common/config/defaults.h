#pragma once

// Defaults for fields the protos leave unset, in one place so both planes, the docs and the
// Helm chart agree. The .proto comments name the same values.

#include <chrono>
#include <cstdint>

namespace onedomain::config::defaults {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Ports (DESIGN.md).
inline constexpr uint16_t kDataplanePort = 3456;
inline constexpr uint16_t kDataplaneAdminPort = 9901;
inline constexpr uint16_t kControlplaneGrpcPort = 18000;
inline constexpr uint16_t kControlplaneHttpPort = 9902;
inline constexpr uint16_t kDemoBackendPort = 8000;

// Listener limits.
inline constexpr uint32_t kMaxHeaderBytes = 64 * 1024;
inline constexpr seconds kHeaderTimeout{10};
inline constexpr seconds kIdleTimeout{60};
inline constexpr uint64_t kMaxBodyBytes = 1ull << 30;

// Clusters.
inline constexpr seconds kConnectTimeout{5};
inline constexpr seconds kResponseTimeout{60};
// 0: no cap on idle connections; the pool follows demand (see IdlePool).
inline constexpr uint32_t kPoolMaxIdle = 0;
inline constexpr seconds kPoolIdleTimeout{30};
inline constexpr uint32_t kOutlierConsecutiveFailures = 5;
inline constexpr seconds kOutlierEjectionTime{30};
inline constexpr uint32_t kRequestBufferBytes = 64 * 1024;
inline constexpr uint32_t kMaxRequestBufferBytes = 16 * 1024 * 1024;
inline constexpr seconds kBodyTimeout{30};
inline constexpr uint32_t kOutlierPanicThresholdPercent = 50;
inline constexpr seconds kDnsRefreshInterval{30};

// WebSockets and drain.
inline constexpr seconds kWsDrainGrace{10};
inline constexpr seconds kWsDrainSpread{5};
inline constexpr seconds kDrainDelay{5};
inline constexpr seconds kDrainTimeout{30};

// Workers: the scheduler slice of threads that yield before they sleep (worker_slice auto).
inline constexpr std::chrono::microseconds kYieldingWorkerSlice{500};

// Control-plane client.
inline constexpr milliseconds kBackoffInitial{250};
inline constexpr seconds kBackoffMax{30};
inline constexpr seconds kReportInterval{5};
inline constexpr char kSnapshotCachePath[] = "/var/lib/onedomain/snapshot.pb";

// Control plane.
inline constexpr char kStoreDirectory[] = "/var/lib/onedomain/store";
inline constexpr uint32_t kKeepVersions = 50;
inline constexpr char kTokenEnv[] = "ONEDOMAIN_ADMIN_TOKEN";
inline constexpr uint32_t kMaxNodes = 1000;
inline constexpr seconds kForgetNodesAfter{300};

}  // namespace onedomain::config::defaults
