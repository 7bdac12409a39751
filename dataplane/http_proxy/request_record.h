#pragma once

// What the proxy remembers about one request until it is answered: when it started, the
// route it took, the status sent, bytes, and the error if any. FinishRequest turns it into
// the route's metrics and the access-log line. Lives on the session's frame; no allocation.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dataplane/http_proxy/proxy_error.h"
#include "dataplane/runtime/time_source.h"
#include "dataplane/stats/dataplane_stats.h"

namespace onedomain::dataplane {

class AccessLog;
class Host;

struct RequestRecord {
  Clock::time_point start{};
  stats::RouteCounters* route_counters = nullptr;  // "none" until routed
  std::string_view route_name = "none";
  int status = 0;
  std::optional<ProxyErrorKind> error;
  uint64_t bytes_received = 0;  // body bytes from the client
  uint64_t bytes_sent = 0;      // bytes to the client (head + body)
  const Host* upstream = nullptr;
  bool http2 = false;  // came over an HTTP/2 stream (the metrics' protocol label)
};

// Everything the access log needs beyond the record (copied per request only when the log
// is enabled, since the head's views die with the read buffer).
struct AccessContext {
  const AccessLog* log = nullptr;
  std::string* scratch = nullptr;
  std::string_view client;
  std::string_view listener;
  std::string_view method;
  std::string_view target;
  int version = 11;
};

// Records the request's metrics and its access-log line. Call once per request that got
// (or started to get) an answer.
// `now`: when the response ended (the worker's clock).
void FinishRequest(const RequestRecord& record, const AccessContext& access, Clock::time_point now);

}  // namespace onedomain::dataplane
