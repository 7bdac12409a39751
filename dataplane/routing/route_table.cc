#include "dataplane/routing/route_table.h"

#include "common/strings/strings.h"

namespace onedomain::dataplane {

std::string_view HostWithoutPort(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(1, close - 1);
  }
  const size_t colon = host.rfind(':');
  if (colon == std::string_view::npos) return host;
  // More than one colon without brackets: a bare IPv6 literal, keep it whole.
  if (host.find(':') != colon) return host;
  return host.substr(0, colon);
}

std::string_view PathOfTarget(std::string_view target) {
  if (target.empty()) return {};
  if (target.front() != '/') {
    // Absolute-form (RFC 9112 3.2.2): route on its path.
    std::string_view rest = target;
    if (!str::ConsumePrefix(rest, "http://") && !str::ConsumePrefix(rest, "https://")) return {};
    const size_t slash = rest.find_first_of("/?");
    if (slash == std::string_view::npos) return "/";
    if (rest[slash] == '?') return "/";
    target = rest.substr(slash);
  }
  const size_t q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

bool HostMatches(const CompiledRoute& route, std::string_view host) {
  if (route.host.empty()) return true;
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);  // FQDN form
  if (!route.host_wildcard) return str::EqualsIgnoreCase(host, route.host);
  // "*.example.com" matches "a.example.com" and "a.b.example.com", not "example.com".
  if (host.size() <= route.host.size() + 1) return false;
  const std::string_view tail = host.substr(host.size() - route.host.size());
  return host[host.size() - route.host.size() - 1] == '.' &&
         str::EqualsIgnoreCase(tail, route.host);
}

const CompiledRoute* RouteTable::Match(std::string_view host, std::string_view path) const {
  const std::string_view bare_host = HostWithoutPort(host);
  for (const CompiledRoute& r : routes_) {
    const bool path_ok = r.exact ? path == r.path : path.starts_with(r.path);
    if (path_ok && HostMatches(r, bare_host)) return &r;
  }
  return nullptr;
}

}  // namespace onedomain::dataplane
