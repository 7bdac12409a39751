#pragma once

// The data plane's hot-path counters. Each worker owns its own counters and is their only
// writer, so an increment is a relaxed load and store (a plain add on x86, no lock prefix, no
// shared cache line); a scrape sums the workers. prometheus-cpp's Counter would do a CAS on a
// line shared by every worker and its Histogram::Observe takes a mutex, which the request
// path must not (STYLE rule 11); both stay for rare metrics (config version, applies).
//
// Labels come only from configuration (route and cluster names) or from closed sets (status
// codes 100..599, upgrade results), never from request data.
//
// Thread safety: StatsCatalog is thread-safe; counters are written by one worker and read by
// any thread.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace prometheus {
struct MetricFamily;
}  // namespace prometheus

namespace onedomain::dataplane::stats {

// Single-writer counter.
class Counter {
 public:
  void Add(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t Get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Single-writer gauge.
class Gauge {
 public:
  void Add(int64_t d) {
    v_.store(v_.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
  }
  void Inc() { Add(1); }
  void Dec() { Add(-1); }
  int64_t Get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

inline constexpr size_t kStatusCodes = 600;
inline constexpr std::array<double, 16> kDurationBounds = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

// Outcomes of a WebSocket upgrade; the names are MetricsReport's keys.
enum class UpgradeResult : uint8_t {
  kAccepted,
  kOriginRefused,
  kCookieRefused,
  kNotAllowed,  // the route lacks `websocket: true`
  kMalformed,   // not GET, not HTTP/1.1, a body, bad Sec-WebSocket-Version or -Key
  kUpstreamRefused,
  kUpstreamFailed,
  kCount,
};
std::string_view UpgradeResultName(UpgradeResult r);

// Why a client limit refused something (issue 20); the `reason` label of
// onedomain_limit_rejections_total. Connections and PROXY headers have no route ("none").
enum class LimitReason : uint8_t {
  kConnections,          // over max_connections_per_client: closed at accept
  kWebSocketsPerClient,  // 429
  kWebSocketsPerCookie,  // 429
  kUpgradeRate,          // 429
  kRequestRate,          // 429
  kProxyHeader,          // PROXY header missing, malformed or late: closed
  kCount,
};
std::string_view LimitReasonName(LimitReason r);

// Cookie policy outcomes on one route: Set-Cookie rewrites by rule bit (see
// CompiledCookiePolicy::RewriteResult) and values passed through untouched as unparseable.
struct CookieCounters {
  std::array<Counter, 64> rule_hits;
  Counter unparsed;
};

// WebSocket tunnels of one route: closes by initiator and code, and how long tunnels lived.
enum class WsCloseInitiator : uint8_t { kClient, kUpstream, kProxy, kCount };
inline constexpr size_t kWsCloseCodeSlots = 18;  // 1000..1015, then "other", then "none"
inline constexpr std::array<double, 10> kWsDurationBounds = {1,    10,    60,    300,   1800,
                                                             3600, 14400, 43200, 86400, 604800};
struct WsTunnelCounters {
  std::array<Counter, kWsCloseCodeSlots* static_cast<size_t>(WsCloseInitiator::kCount)> closes;
  std::array<Counter, kWsDurationBounds.size() + 1> duration_buckets;  // last: +Inf
  std::atomic<double> duration_sum{0};

  // `code` 0: the tunnel ended without a Close frame.
  void RecordClose(WsCloseInitiator who, int code);
  void RecordDuration(double seconds);
};

struct alignas(64) RouteCounters {
  std::array<Counter, kStatusCodes> codes;  // every protocol
  // The part of `codes` and `upgrades` that came over HTTP/2 (the `protocol` label: http1 is
  // the rest), so the totals the control plane reads stay one sum.
  std::array<Counter, kStatusCodes> codes_http2;
  std::array<Counter, kDurationBounds.size() + 1> duration_buckets;  // last: +Inf
  std::atomic<double> duration_sum{0};
  std::array<Counter, static_cast<size_t>(UpgradeResult::kCount)> upgrades;
  Gauge websocket_active;
  Counter websocket_bytes_to_upstream;
  Counter websocket_bytes_to_client;
  WsTunnelCounters ws;

  CookieCounters cookies;

  // Client limits (issue 20): refusals by reason; times a tunnel direction had
  // max_buffered_bytes waiting for a slow reader and paused its sender ([0] to upstream,
  // [1] to client).
  std::array<Counter, static_cast<size_t>(LimitReason::kCount)> limit_rejections;
  std::array<Counter, 2> websocket_paused;
  std::array<Counter, static_cast<size_t>(UpgradeResult::kCount)> upgrades_http2;

  void RecordRequest(int status, double seconds, bool http2 = false);
  void RecordUpgrade(UpgradeResult r, bool http2 = false) {
    upgrades[static_cast<size_t>(r)].Add();
    if (http2) upgrades_http2[static_cast<size_t>(r)].Add();
  }
};

struct alignas(64) ClusterCounters {
  Gauge connections_active;
  Counter connections_total;  // opened
  Counter pool_stale;         // idle pooled connections found closed or dirty before reuse
  Counter connect_failures;
  Counter retries;
  Counter ejections;
};

// HTTP/2 connections: why a GOAWAY went out, and the protocol errors and abuses that were
// answered (bounded reasons; names in Http2GoawayName / Http2ErrorName).
enum class Http2Goaway : uint8_t {
  kNoError,  // drain, idle timeout, the client's own GOAWAY answered
  kProtocolError,
  kFlowControlError,
  kCompressionError,
  kEnhanceYourCalm,  // rapid reset, floods
  kOther,
  kCount,
};
std::string_view Http2GoawayName(Http2Goaway r);
enum class Http2Error : uint8_t {
  kBadPreface,          // not the client connection preface
  kFlood,               // SETTINGS/PING acks piling up, or too many CONTINUATION frames
  kRapidReset,          // streams reset faster than the rate limit
  kEmptyFrames,         // DATA frames without data or end, beyond the allowance
  kHeaderListTooLarge,  // answered 431 on the stream
  kBadHeader,           // a malformed or forbidden field: stream error
  kBadMessage,          // pseudo-headers, content-length and the like: stream error
  kFlowControl,         // a flow-control violation
  kProtocol,            // any other connection error
  kZeroWindow,          // the client kept the window shut past the idle timeout
  kCount,
};
std::string_view Http2ErrorName(Http2Error r);

struct alignas(64) WorkerCounters {
  Gauge http2_streams_active;
  std::array<Counter, static_cast<size_t>(Http2Goaway::kCount)> http2_goaways;
  std::array<Counter, static_cast<size_t>(Http2Error::kCount)> http2_errors;
  Gauge downstream_active;
  Counter downstream_total;
  Counter handoffs;                 // accepted here, handed to a less loaded worker
  Counter accept_failures;          // accept() errors (out of descriptors, memory)
  Counter accept_shed;              // accepted and closed at once for lack of descriptors
  Counter bytes_received;           // from clients
  Counter bytes_sent;               // to clients
  Gauge websocket_drain_remaining;  // tunnels told to drain and not yet closed
};

// Cumulative totals for the control plane's MetricsReport.
struct CounterTotals {
  uint64_t downstream_connections_active = 0;
  uint64_t downstream_connections_total = 0;
  uint64_t websocket_connections_active = 0;
  std::map<std::string, uint64_t> websocket_upgrades;  // by result name
  std::map<std::string, uint64_t> http_requests;       // "route|2xx"
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t upstream_connect_failures = 0;  // every cluster (rollout gates)
  uint64_t websocket_closes_abnormal = 0;  // codes other than 1000/1001, or none (rollout gates)
};

// Owns every worker's counters. Routes and clusters get a slot by name the first time a
// snapshot names them and keep it for the life of the process, so counters stay cumulative
// across config changes.
class StatsCatalog {
 public:
  static constexpr uint32_t kNoRouteSlot = 0;  // route label "none"

  explicit StatsCatalog(size_t workers);

  size_t workers() const { return workers_.size(); }

  // Called when compiling a snapshot (never on the request path).
  uint32_t RouteSlot(const std::string& name);
  uint32_t ClusterSlot(const std::string& name);

  // Stable references, valid for the catalog's life.
  RouteCounters& route(size_t worker, uint32_t slot);
  ClusterCounters& cluster(size_t worker, uint32_t slot);
  WorkerCounters& worker(size_t worker) { return *workers_[worker].totals; }

  // Prometheus families of everything here, summed over workers.
  std::vector<prometheus::MetricFamily> Collect() const;

  CounterTotals Totals() const;

 private:
  void CollectWebSocketFamilies(std::vector<prometheus::MetricFamily>& out) const;

 public:
 private:
  // Appends the cookie-policy families (called by Collect with mu_ held).
  void CollectCookieFamilies(std::vector<prometheus::MetricFamily>& out) const;
  // Appends the client-limit families (called by Collect with mu_ held).
  void CollectLimitFamilies(std::vector<prometheus::MetricFamily>& out) const;
  void CollectHttp2Families(std::vector<prometheus::MetricFamily>& out) const;

  struct PerWorker {
    std::unique_ptr<WorkerCounters> totals = std::make_unique<WorkerCounters>();
    std::vector<std::unique_ptr<RouteCounters>> routes;
    std::vector<std::unique_ptr<ClusterCounters>> clusters;
  };

  mutable std::mutex mu_;
  std::vector<PerWorker> workers_;
  std::vector<std::string> route_names_;
  std::vector<std::string> cluster_names_;
  std::unordered_map<std::string, uint32_t> route_slots_;
  std::unordered_map<std::string, uint32_t> cluster_slots_;
};

}  // namespace onedomain::dataplane::stats
