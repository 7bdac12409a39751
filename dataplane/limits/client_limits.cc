#include "dataplane/limits/client_limits.h"

#include <cmath>

#include "common/strings/strings.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane {
namespace {

RateLimit ToRate(const v1::RateLimit& r) {
  RateLimit out;
  out.per_second = r.per_second();
  out.burst =
      r.burst() > 0 ? static_cast<double>(r.burst()) : std::max(1.0, std::ceil(r.per_second()));
  return out;
}

}  // namespace

absl::StatusOr<NodeClientLimits> CompileNodeClientLimits(const v1::Snapshot& snapshot) {
  NodeClientLimits n;
  const v1::ClientLimits& l = snapshot.client_limits();
  if (l.has_max_connections_per_client()) {
    n.max_connections_per_client = l.max_connections_per_client();
  }
  if (l.has_table_entries()) n.table_entries = l.table_entries();
  for (int i = 0; i < snapshot.site().trusted_proxies_size(); ++i) {
    const std::string& text = snapshot.site().trusted_proxies(i);
    const std::optional<Cidr> c = Cidr::Parse(text);
    if (!c) {
      return absl::InvalidArgumentError(
          str::Cat("site.trusted_proxies[", i, "]: '", text, "' is not a CIDR"));
    }
    n.trusted_proxies.push_back(*c);
  }
  return n;
}

RouteClientLimits CompileRouteClientLimits(const v1::Snapshot& snapshot, const v1::Route& route,
                                           const v1::WebSocketPolicy* merged_ws, uint32_t scope) {
  const v1::ClientLimits& g = snapshot.client_limits();
  const v1::ClientLimits& r = route.client_limits();
  RouteClientLimits out;
  if (r.has_max_websockets_per_client()) {
    out.max_websockets_per_client = r.max_websockets_per_client();
    out.websockets_per_client_scope = scope;
  } else if (g.has_max_websockets_per_client()) {
    out.max_websockets_per_client = g.max_websockets_per_client();
  }
  if (r.has_max_websockets_per_cookie()) {
    out.max_websockets_per_cookie = r.max_websockets_per_cookie();
    out.websockets_per_cookie_scope = scope;
  } else if (g.has_max_websockets_per_cookie()) {
    out.max_websockets_per_cookie = g.max_websockets_per_cookie();
  }
  std::string_view cookie = !r.websocket_cookie().empty()   ? r.websocket_cookie()
                            : !g.websocket_cookie().empty() ? g.websocket_cookie()
                            : merged_ws != nullptr          ? merged_ws->required_cookie()
                                                            : std::string_view();
  if (!cookie.empty() && cookie.back() == '*') {
    out.cookie_prefix = true;
    cookie.remove_suffix(1);
  }
  out.cookie_name = std::string(cookie);
  if (r.has_upgrade_rate()) {
    out.upgrade_rate = ToRate(r.upgrade_rate());
    out.upgrade_rate_scope = scope;
  } else if (g.has_upgrade_rate()) {
    out.upgrade_rate = ToRate(g.upgrade_rate());
  }
  if (r.has_request_rate()) {
    out.request_rate = ToRate(r.request_rate());
    out.request_rate_scope = scope;
  } else if (g.has_request_rate()) {
    out.request_rate = ToRate(g.request_rate());
  }
  return out;
}

}  // namespace onedomain::dataplane
