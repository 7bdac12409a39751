#pragma once

// A cluster as compiled from one snapshot: immutable, shared by every worker. When the next
// snapshot leaves a cluster unchanged, the compiler hands out the same object again, so
// workers keep its connection pools and outlier state.

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "onedomain/v1/cluster.pb.h"

namespace onedomain::dataplane {

enum class LbPolicy : uint8_t { kRoundRobin, kLeastRequest };

struct PoolConfig {
  uint32_t max_idle = 0;         // 0: no cap, the pool follows demand
  uint32_t max_connections = 0;  // 0: no limit
  std::chrono::nanoseconds idle_timeout{std::chrono::seconds(30)};
};

struct OutlierConfig {
  uint32_t consecutive_failures = 5;  // 0: off
  std::chrono::nanoseconds ejection_time{std::chrono::seconds(30)};
  bool count_5xx = false;                 // 5xx answers count as failures
  uint32_t panic_threshold_percent = 50;  // below it, ejections are ignored; 0: off
};

struct CompiledEndpoint {
  std::string host;
  uint16_t port = 0;
  bool literal = false;   // an IP literal: never resolved again
  std::string authority;  // "host:port", the Host header when the client sent none
  // Addresses known when the snapshot was compiled; DNS refreshes replace them per worker.
  std::vector<boost::asio::ip::tcp::endpoint> addresses;
};

struct CompiledCluster {
  std::string name;
  uint32_t stats_slot = 0;
  std::vector<CompiledEndpoint> endpoints;
  LbPolicy lb = LbPolicy::kRoundRobin;
  std::chrono::nanoseconds connect_timeout{std::chrono::seconds(5)};
  std::chrono::nanoseconds response_timeout{std::chrono::seconds(60)};
  PoolConfig pool;
  OutlierConfig outlier;
  std::chrono::nanoseconds dns_refresh_interval{std::chrono::seconds(30)};
  v1::Cluster source;  // to tell an unchanged cluster in the next snapshot
};

}  // namespace onedomain::dataplane
