#include "dataplane/http_proxy/client_limits_phase.h"

#include <sys/socket.h>

#include <vector>

#include "common/strings/strings.h"
#include "dataplane/limits/client_limits.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"

namespace onedomain::dataplane {
namespace {

// Retry-After for a refused WebSocket: a count frees up when some socket closes, which the
// node cannot predict; browsers' reconnect loops back off from here.
constexpr uint32_t kWebSocketRetryAfterSeconds = 5;

bool IsXForwardedFor(const HeaderField& f) {
  return f.id == http::field::unknown && str::EqualsIgnoreCase(f.name, "x-forwarded-for");
}

void Count(stats::RouteCounters& c, stats::LimitReason r) {
  c.limit_rejections[static_cast<size_t>(r)].Add();
}

}  // namespace

bool InitClientFromPeer(int fd, ClientState& client) {
  sockaddr_storage peer{};
  socklen_t len = sizeof(peer);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return false;
  const std::optional<ClientAddress> a =
      ClientAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&peer), len);
  if (!a) return false;
  client.address = *a;
  client.text = a->ToString();
  return !client.text.empty();
}

bool AdmitConnection(ClientState& client, const NodeClientLimits& limits, Worker& worker) {
  if (limits.max_connections_per_client == 0) return true;
  ConcurrencyTable& table = NodeConcurrencyTable();
  const uint64_t key = LimitKey(client.address, 0, LimitKind::kConnections);
  switch (table.TryAcquire(key, limits.max_connections_per_client)) {
    case ConcurrencyTable::Acquired::kOk:
      client.connection = ConcurrencyLease(table, key);
      return true;
    case ConcurrencyTable::Acquired::kUntracked:
      return true;
    case ConcurrencyTable::Acquired::kOverLimit:
      break;
  }
  Count(worker.no_route_counters(), stats::LimitReason::kConnections);
  return false;
}

bool DecideClientFromForwardedFor(ClientState& client, const RequestHead& head,
                                  const NodeClientLimits& limits, Worker& worker) {
  client.decided = true;
  std::vector<std::string_view> values;
  for (const HeaderField& f : head.fields) {
    if (IsXForwardedFor(f)) values.push_back(f.value);
  }
  const ClientAddress decided =
      ClientFromForwardedFor(client.address, values, limits.trusted_proxies);
  if (!(decided == client.address)) {
    client.address = decided;
    client.text = decided.ToString();
  }
  return AdmitConnection(client, limits, worker);
}

std::string_view FindCookieValue(const RequestHead& head, std::string_view name, bool prefix) {
  for (const HeaderField& f : head.fields) {
    if (f.id != http::field::cookie) continue;
    std::string_view v = f.value;
    while (!v.empty()) {
      const size_t semi = v.find(';');
      const std::string_view pair = str::StripWhitespace(v.substr(0, semi));
      const size_t eq = pair.find('=');
      if (eq != std::string_view::npos) {
        const std::string_view n = str::StripWhitespace(pair.substr(0, eq));
        const std::string_view value = str::StripWhitespace(pair.substr(eq + 1));
        const bool match = prefix ? n.substr(0, name.size()) == name : n == name;
        if (match && !value.empty()) return value;
      }
      if (semi == std::string_view::npos) break;
      v.remove_prefix(semi + 1);
    }
  }
  return {};
}

std::optional<ProxyError> CheckClientLimits(ClientState& client, const WorkerConfig& cfg,
                                            const CompiledRoute& route, const RequestHead& head,
                                            bool upgrade, Worker& worker,
                                            stats::RouteCounters& counters) {
  const std::vector<RouteClientLimits>& all = cfg.compiled->route_limits;
  if (route.index >= all.size()) return std::nullopt;  // no limits in this snapshot
  const RouteClientLimits& l = all[route.index];
  RateTable* rates = worker.rate_table();
  const Clock::time_point now = worker.Now();
  using R = stats::LimitReason;
  if (rates != nullptr && l.request_rate.enabled()) {
    const uint64_t key = LimitKey(client.address, l.request_rate_scope, LimitKind::kRequestRate);
    if (const uint32_t wait = rates->Take(key, l.request_rate, now); wait > 0) {
      Count(counters, R::kRequestRate);
      return ProxyError{ProxyErrorKind::kRateLimited, "request rate", wait};
    }
  }
  if (!upgrade) return std::nullopt;
  if (rates != nullptr && l.upgrade_rate.enabled()) {
    const uint64_t key = LimitKey(client.address, l.upgrade_rate_scope, LimitKind::kUpgradeRate);
    if (const uint32_t wait = rates->Take(key, l.upgrade_rate, now); wait > 0) {
      Count(counters, R::kUpgradeRate);
      return ProxyError{ProxyErrorKind::kRateLimited, "WebSocket upgrade rate", wait};
    }
  }
  ConcurrencyTable& table = NodeConcurrencyTable();
  using A = ConcurrencyTable::Acquired;
  if (l.max_websockets_per_client != 0) {
    const uint64_t key =
        LimitKey(client.address, l.websockets_per_client_scope, LimitKind::kWebSocketsPerClient);
    const A a = table.TryAcquire(key, l.max_websockets_per_client);
    if (a == A::kOverLimit) {
      Count(counters, R::kWebSocketsPerClient);
      return ProxyError{ProxyErrorKind::kTooManyWebSockets, "per client address",
                        kWebSocketRetryAfterSeconds};
    }
    if (a == A::kOk) client.websocket_by_client = ConcurrencyLease(table, key);
  }
  if (l.max_websockets_per_cookie != 0 && !l.cookie_name.empty()) {
    const std::string_view value = FindCookieValue(head, l.cookie_name, l.cookie_prefix);
    if (!value.empty()) {
      const uint64_t key = CookieLimitKey(value, l.websockets_per_cookie_scope);
      const A a = table.TryAcquire(key, l.max_websockets_per_cookie);
      if (a == A::kOverLimit) {
        client.websocket_by_client.reset();
        Count(counters, R::kWebSocketsPerCookie);
        return ProxyError{ProxyErrorKind::kTooManyWebSockets, "per session",
                          kWebSocketRetryAfterSeconds};
      }
      if (a == A::kOk) client.websocket_by_cookie = ConcurrencyLease(table, key);
    }
  }
  return std::nullopt;
}

void ReleaseWebSocketCounts(ClientState& client) {
  client.websocket_by_client.reset();
  client.websocket_by_cookie.reset();
}

}  // namespace onedomain::dataplane
