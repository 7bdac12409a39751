#include "common/config/validation.h"
#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "common/strings/strings.h"

#include <arpa/inet.h>

#include <set>

#include "onedomain/v1/bootstrap.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::config {
namespace {

class Checker {
 public:
  explicit Checker(FieldErrors& errors) : errors_(errors) {}

  void Add(std::string path, std::string message) {
    errors_.push_back({std::move(path), std::move(message)});
  }

  void Name(const std::string& path, std::string_view name, std::string_view what) {
    if (name.empty()) {
      Add(path, str::Cat(what, " name is required"));
    } else if (!IsValidName(name)) {
      Add(path, str::Cat("'", name, "' is not a valid name (letters, digits, '.', '_', '-'; ",
                         "at most 128)"));
    }
  }

  void Port(const std::string& path, uint64_t port, bool allow_zero) {
    if (port > 65535 || (!allow_zero && port == 0)) {
      Add(path, str::Cat("must be ", allow_zero ? 0 : 1, "..65535, got ", port));
    }
  }

  void Duration(const std::string& path, const google::protobuf::Duration& d) {
    if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999999999) {
      Add(path, "must be a non-negative duration");
    }
  }

  void Listener(const std::string& p, const v1::Listener& l) {
    Name(p + ".name", l.name(), "listener");
    if (!l.address().empty() && !IsIpLiteral(l.address())) {
      Add(p + ".address", str::Cat("'", l.address(), "' is not an IPv4 or IPv6 address"));
    }
    if (l.has_port()) Port(p + ".port", l.port(), /*allow_zero=*/true);
    if (l.has_tls()) {
      if (l.tls().cert_file().empty()) Add(p + ".tls.cert_file", "required when tls is set");
      if (l.tls().key_file().empty()) Add(p + ".tls.key_file", "required when tls is set");
      const std::string& v = l.tls().min_version();
      if (!v.empty() && v != "TLSv1.2" && v != "TLSv1.3") {
        Add(p + ".tls.min_version", str::Cat("must be TLSv1.2 or TLSv1.3, got '", v, "'"));
      }
      for (int i = 0; i < l.tls().alpn_size(); ++i) {
        const std::string& a = l.tls().alpn(i);
        if (a.empty() || a.size() > 255) {
          Add(str::Cat(p, ".tls.alpn[", i, "]"), "must be 1..255 bytes");
        }
      }
    }
    if (l.has_http2()) {
      const uint32_t streams = l.http2().max_concurrent_streams();
      if (streams > 1000) {
        Add(p + ".http2.max_concurrent_streams", str::Cat("must be 1..1000, got ", streams));
      }
      if (l.http2().prior_knowledge() && l.has_tls()) {
        Add(p + ".http2.prior_knowledge",
            "only for plain listeners (TLS listeners negotiate h2 with ALPN)");
      }
    }
    if (l.has_limits()) {
      const v1::HttpLimits& lim = l.limits();
      if (lim.has_max_header_bytes() &&
          (lim.max_header_bytes() < 1024 || lim.max_header_bytes() > 1048576)) {
        Add(p + ".limits.max_header_bytes",
            str::Cat("must be 1024..1048576, got ", lim.max_header_bytes()));
      }
      Duration(p + ".limits.header_timeout", lim.header_timeout());
      Duration(p + ".limits.idle_timeout", lim.idle_timeout());
      Duration(p + ".limits.body_timeout", lim.body_timeout());
      if (lim.request_buffer_bytes() > defaults::kMaxRequestBufferBytes) {
        Add(p + ".limits.request_buffer_bytes",
            str::Cat("must be 0..", defaults::kMaxRequestBufferBytes, ", got ",
                     lim.request_buffer_bytes()));
      }
    }
    const std::string& fp = l.forwarded_proto();
    if (!fp.empty() && fp != "http" && fp != "https") {
      Add(p + ".forwarded_proto", str::Cat("must be http or https, got '", fp, "'"));
    }
    const std::string& pp = l.proxy_protocol();
    if (!pp.empty() && pp != "off" && pp != "v1" && pp != "v2" && pp != "any") {
      Add(p + ".proxy_protocol", str::Cat("must be v1, v2, any or off, got '", pp, "'"));
    }
    Duration(p + ".proxy_header_timeout", l.proxy_header_timeout());
  }

  // Client limits (issue 20). `route`: a route's overrides (snapshot-wide fields refused).
  void Limits(const std::string& p, const v1::ClientLimits& l, bool route) {
    constexpr uint32_t kMaxCount = 1000000;
    const auto count = [&](const char* field, bool has, uint32_t v) {
      if (has && (v < 1 || v > kMaxCount)) {
        Add(str::Cat(p, ".", field), str::Cat("must be 1..", kMaxCount, ", got ", v));
      }
    };
    if (route && l.has_max_connections_per_client()) {
      Add(p + ".max_connections_per_client",
          "snapshot-wide only (connections are counted before any route matches); set it in "
          "the snapshot's client_limits");
    } else {
      count("max_connections_per_client", l.has_max_connections_per_client(),
            l.max_connections_per_client());
    }
    count("max_websockets_per_client", l.has_max_websockets_per_client(),
          l.max_websockets_per_client());
    count("max_websockets_per_cookie", l.has_max_websockets_per_cookie(),
          l.max_websockets_per_cookie());
    const std::string& c = l.websocket_cookie();
    if (!c.empty() && (c == "*" || !IsValidNamePattern(c))) {
      Add(p + ".websocket_cookie",
          str::Cat("'", c, "' is not a cookie name or name prefix ending in '*'"));
    }
    if (l.has_upgrade_rate()) Rate(p + ".upgrade_rate", l.upgrade_rate());
    if (l.has_request_rate()) Rate(p + ".request_rate", l.request_rate());
    if (route && l.has_table_entries()) {
      Add(p + ".table_entries", "snapshot-wide only; set it in the snapshot's client_limits");
    } else if (l.has_table_entries() &&
               (l.table_entries() < 1024 || l.table_entries() > 16777216)) {
      Add(p + ".table_entries", str::Cat("must be 1024..16777216, got ", l.table_entries()));
    }
  }

  void Rate(const std::string& p, const v1::RateLimit& r) {
    const double v = r.per_second();
    if (!(v > 0) || !(v <= 1e6)) {  // also refuses NaN
      Add(p + ".per_second", str::Cat("must be > 0 and at most 1000000, got ", v));
    }
    if (r.burst() > 1000000) Add(p + ".burst", str::Cat("must be 0..1000000, got ", r.burst()));
  }

  static bool IsCidr(std::string_view s) {
    const size_t slash = s.find('/');
    const std::string_view addr = s.substr(0, slash);
    const std::string a(addr);
    unsigned char buf[16];
    uint32_t max;
    if (inet_pton(AF_INET, a.c_str(), buf) == 1) {
      max = 32;
    } else if (inet_pton(AF_INET6, a.c_str(), buf) == 1) {
      max = 128;
    } else {
      return false;
    }
    if (slash == std::string_view::npos) return true;
    uint32_t bits = 0;
    const std::string_view b = s.substr(slash + 1);
    return !b.empty() && b.size() <= 3 && str::ParseInt(b, bits) && bits <= max;
  }

  void Cluster(const std::string& p, const v1::Cluster& c) {
    Name(p + ".name", c.name(), "cluster");
    if (c.endpoints_size() == 0) Add(p + ".endpoints", "a cluster needs at least one endpoint");
    for (int i = 0; i < c.endpoints_size(); ++i) {
      const std::string ep = str::Cat(p, ".endpoints[", i, "]");
      const v1::Endpoint& e = c.endpoints(i);
      if (e.host().empty()) {
        Add(ep + ".host", "required");
      } else if (!IsValidHost(e.host())) {
        Add(ep + ".host", str::Cat("'", e.host(), "' is not a host name or IP address"));
      }
      Port(ep + ".port", e.port(), /*allow_zero=*/false);
    }
    Duration(p + ".connect_timeout", c.connect_timeout());
    Duration(p + ".response_timeout", c.response_timeout());
    Duration(p + ".pool.idle_timeout", c.pool().idle_timeout());
    Duration(p + ".outlier_detection.ejection_time", c.outlier_detection().ejection_time());
    if (c.outlier_detection().panic_threshold_percent() > 100) {
      Add(p + ".outlier_detection.panic_threshold_percent",
          str::Cat("must be 0..100, got ", c.outlier_detection().panic_threshold_percent()));
    }
    Duration(p + ".dns_refresh_interval", c.dns_refresh_interval());
    if (c.has_tls() && !c.tls().server_name().empty() && !IsValidHost(c.tls().server_name())) {
      Add(p + ".tls.server_name", str::Cat("'", c.tls().server_name(), "' is not a host name"));
    }
  }

  void WebSocket(const std::string& p, const v1::WebSocketPolicy& w) {
    for (int i = 0; i < w.allowed_origins_size(); ++i) {
      const std::string& o = w.allowed_origins(i);
      if (o != "*" && !IsValidOrigin(o)) {
        Add(str::Cat(p, ".allowed_origins[", i, "]"),
            str::Cat("'", o, "' is not an origin (scheme://host[:port], no path) or \"*\""));
      }
    }
    if (!w.required_cookie().empty() && !IsValidNamePattern(w.required_cookie())) {
      Add(p + ".required_cookie", str::Cat("'", w.required_cookie(),
                                           "' is not a cookie name or name prefix ending "
                                           "in '*'"));
    }
    Duration(p + ".idle_timeout", w.idle_timeout());
    Duration(p + ".keepalive_interval", w.keepalive_interval());
    Duration(p + ".drain_grace", w.drain_grace());
    Duration(p + ".drain_spread", w.drain_spread());
    Duration(p + ".max_lifetime", w.max_lifetime());
    if (w.has_max_buffered_bytes() &&
        (w.max_buffered_bytes() < 1024 || w.max_buffered_bytes() > 65536)) {
      Add(p + ".max_buffered_bytes", str::Cat("must be 1024..65536, got ", w.max_buffered_bytes()));
    }
  }

  void Cookies(const std::string& p, const v1::CookiePolicy& c, std::string_view site_domain) {
    // Each rule has a metric bit (CompiledCookiePolicy::RewriteResult): 16 + 16 + 32.
    if (c.domain_rewrites_size() > 16) Add(p + ".domain_rewrites", "at most 16 rules");
    if (c.path_rewrites_size() > 16) Add(p + ".path_rewrites", "at most 16 rules");
    if (c.attribute_rules_size() > 32) Add(p + ".attribute_rules", "at most 32 rules");
    for (int i = 0; i < c.domain_rewrites_size(); ++i) {
      const std::string rp = str::Cat(p, ".domain_rewrites[", i, "]");
      const v1::DomainRewrite& r = c.domain_rewrites(i);
      if (r.from().empty()) {
        Add(rp + ".from", "required (\"*\" matches any domain)");
      } else if (r.from() != "*" && !IsValidHost(str::StripPrefix(r.from(), "."))) {
        Add(rp + ".from", str::Cat("'", r.from(), "' is not a domain"));
      }
      if (r.to().empty()) {
        Add(rp + ".to", "required");
      } else if (!IsValidCookieDomain(r.to())) {
        Add(rp + ".to", str::Cat("'", r.to(), "' is not a cookie domain"));
      } else if (site_domain.empty()) {
        Add(rp + ".to", "site.cookie_domain must be set before cookie domains can be rewritten");
      } else if (!IsDomainOrParent(r.to(), site_domain)) {
        Add(rp + ".to", str::Cat("'", r.to(), "' is neither the site's cookie domain '",
                                 site_domain, "' nor a parent of it"));
      }
    }
    for (int i = 0; i < c.path_rewrites_size(); ++i) {
      const std::string rp = str::Cat(p, ".path_rewrites[", i, "]");
      if (!str::StartsWith(c.path_rewrites(i).from(), "/"))
        Add(rp + ".from", "must start with '/'");
      if (!str::StartsWith(c.path_rewrites(i).to(), "/")) Add(rp + ".to", "must start with '/'");
    }
    for (int i = 0; i < c.attribute_rules_size(); ++i) {
      const std::string rp = str::Cat(p, ".attribute_rules[", i, "]");
      const v1::AttributeRule& r = c.attribute_rules(i);
      if (!IsValidNamePattern(r.name())) {
        Add(rp + ".name", str::Cat("'", r.name(), "' is not a cookie name pattern (a name, ",
                                   "a prefix ending in '*', or \"*\")"));
      }
      if (r.same_site() == v1::SAME_SITE_NONE && !r.secure()) {
        Add(rp + ".same_site", "SameSite=None requires secure: true (browsers drop it otherwise)");
      }
      Duration(rp + ".max_age_cap", r.max_age_cap());
    }
    const v1::RequestCookies& rc = c.request_cookies();
    if (rc.mode() == v1::RequestCookies::MODE_ALLOW_LIST && rc.names_size() == 0) {
      Add(p + ".request_cookies.names", "allow_list mode needs at least one name");
    }
    for (int i = 0; i < rc.names_size(); ++i) {
      if (!IsValidNamePattern(rc.names(i))) {
        Add(str::Cat(p, ".request_cookies.names[", i, "]"),
            str::Cat("'", rc.names(i), "' is not a cookie name pattern"));
      }
    }
  }

  static bool IsIpLiteral(std::string_view s) {
    const std::string str(s);
    unsigned char buf[16];
    return inet_pton(AF_INET, str.c_str(), buf) == 1 || inet_pton(AF_INET6, str.c_str(), buf) == 1;
  }

 private:
  FieldErrors& errors_;
};

template <typename T>
void CheckUniqueNames(Checker& check, const google::protobuf::RepeatedPtrField<T>& items,
                      std::string_view field) {
  std::set<std::string> seen;
  for (int i = 0; i < items.size(); ++i) {
    const std::string& name = items[i].name();
    if (!name.empty() && !seen.insert(name).second) {
      check.Add(str::Cat(field, "[", i, "].name"), str::Cat("duplicate name '", name, "'"));
    }
  }
}

void Prefix(FieldErrors& errors, size_t from, std::string_view prefix) {
  for (size_t i = from; i < errors.size(); ++i) {
    errors[i].path =
        errors[i].path.empty() ? std::string(prefix) : str::Cat(prefix, ".", errors[i].path);
  }
}

}  // namespace

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (const char c : name) {
    if (!str::IsAlnum(c) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

bool IsValidHost(std::string_view host) {
  if (Checker::IsIpLiteral(host)) return true;
  if (host.empty() || host.size() > 253) return false;
  if (host.back() == '.') host.remove_suffix(1);
  for (std::string_view label : str::Split(host, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (const char c : label) {
      if (!str::IsAlnum(c) && c != '-' && c != '_') return false;
    }
  }
  return true;
}

bool IsValidOrigin(std::string_view origin) {
  std::string_view rest = origin;
  if (!str::ConsumePrefix(rest, "https://") && !str::ConsumePrefix(rest, "http://")) {
    return false;
  }
  if (rest.empty() || rest.find('/') != std::string_view::npos) return false;
  std::string_view host = rest;
  if (str::StartsWith(rest, "[")) {  // [ipv6]:port
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return false;
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      uint32_t port;
      if (!str::ConsumePrefix(after, ":") || !str::ParseInt(after, port) || port == 0 ||
          port > 65535) {
        return false;
      }
    }
    return Checker::IsIpLiteral(host);
  }
  const size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    uint32_t port;
    if (!str::ParseInt(rest.substr(colon + 1), port) || port == 0 || port > 65535) {
      return false;
    }
  }
  return IsValidHost(host) && host.back() != '.';
}

bool IsValidCookieDomain(std::string_view domain) {
  str::ConsumePrefix(domain, ".");
  return !domain.empty() && domain.back() != '.' && IsValidHost(domain) &&
         !Checker::IsIpLiteral(domain);
}

bool IsValidNamePattern(std::string_view pattern) {
  if (pattern == "*") return true;
  str::ConsumeSuffix(pattern, "*");
  if (pattern.empty()) return false;
  // RFC 6265 cookie-name is an RFC 7230 token.
  static constexpr std::string_view kTchar = "!#$%&'*+-.^_`|~";
  for (const char c : pattern) {
    if (!str::IsAlnum(c) && kTchar.find(c) == std::string_view::npos) {
      return false;
    }
  }
  return pattern.find('*') == std::string_view::npos;
}

bool IsDomainOrParent(std::string_view domain, std::string_view site_domain) {
  str::ConsumePrefix(domain, ".");
  str::ConsumePrefix(site_domain, ".");
  const std::string d = str::ToLower(domain);
  const std::string s = str::ToLower(site_domain);
  if (d.find('.') == std::string::npos) return false;  // a bare TLD is never a cookie domain
  return s == d || str::EndsWith(s, str::Cat(".", d));
}

FieldErrors ValidateCookiePolicy(const v1::CookiePolicy& policy, std::string_view cookie_domain) {
  FieldErrors errors;
  Checker check(errors);
  check.Cookies("", policy, cookie_domain);
  for (FieldError& e : errors) e.path = std::string(str::StripPrefix(e.path, "."));
  return errors;
}

FieldErrors ValidateSnapshot(const v1::Snapshot& s) {
  FieldErrors errors;
  Checker check(errors);
  for (int i = 0; i < s.site().origins_size(); ++i) {
    if (!IsValidOrigin(s.site().origins(i))) {
      check.Add(
          str::Cat("site.origins[", i, "]"),
          str::Cat("'", s.site().origins(i), "' is not an origin (scheme://host[:port], no path)"));
    }
  }
  const std::string& cookie_domain = s.site().cookie_domain();
  if (!cookie_domain.empty() && !IsValidCookieDomain(cookie_domain)) {
    check.Add("site.cookie_domain", str::Cat("'", cookie_domain, "' is not a cookie domain"));
  }
  for (int i = 0; i < s.site().trusted_proxies_size(); ++i) {
    const std::string& t = s.site().trusted_proxies(i);
    if (!Checker::IsCidr(t)) {
      check.Add(str::Cat("site.trusted_proxies[", i, "]"),
                str::Cat("'", t,
                         "' is not a CIDR (\"10.0.0.0/8\", \"2001:db8::/32\") or an IP "
                         "address"));
    }
  }
  if (s.has_client_limits()) check.Limits("client_limits", s.client_limits(), /*route=*/false);

  if (s.listeners_size() == 0) check.Add("listeners", "at least one listener is required");
  for (int i = 0; i < s.listeners_size(); ++i) {
    check.Listener(str::Cat("listeners[", i, "]"), s.listeners(i));
  }
  CheckUniqueNames(check, s.listeners(), "listeners");
  std::set<std::pair<std::string, uint32_t>> bound;
  for (int i = 0; i < s.listeners_size(); ++i) {
    const v1::Listener& l = s.listeners(i);
    const uint32_t port = l.has_port() ? l.port() : 3456;
    if (port != 0 && !bound.emplace(l.address().empty() ? "0.0.0.0" : l.address(), port).second) {
      check.Add(str::Cat("listeners[", i, "].port"),
                str::Cat("address and port ", port, " already used by another listener"));
    }
  }

  std::set<std::string> clusters;
  for (int i = 0; i < s.clusters_size(); ++i) {
    check.Cluster(str::Cat("clusters[", i, "]"), s.clusters(i));
    clusters.insert(s.clusters(i).name());
  }
  CheckUniqueNames(check, s.clusters(), "clusters");

  for (int i = 0; i < s.routes_size(); ++i) {
    const std::string p = str::Cat("routes[", i, "]");
    const v1::Route& r = s.routes(i);
    check.Name(p + ".name", r.name(), "route");
    const v1::RouteMatch& m = r.match();
    if (m.prefix().empty() == m.exact().empty()) {
      check.Add(p + ".match", "exactly one of prefix and exact is required");
    }
    if (!m.prefix().empty() && m.prefix()[0] != '/') {
      check.Add(p + ".match.prefix", str::Cat("must start with '/', got '", m.prefix(), "'"));
    }
    if (!m.exact().empty() && m.exact()[0] != '/') {
      check.Add(p + ".match.exact", str::Cat("must start with '/', got '", m.exact(), "'"));
    }
    if (!m.host().empty() && !IsValidHost(str::StripPrefix(m.host(), "*."))) {
      check.Add(p + ".match.host", str::Cat("'", m.host(), "' is not a host name pattern"));
    }
    if (r.cluster().empty()) {
      check.Add(p + ".cluster", "required");
    } else if (clusters.count(r.cluster()) == 0) {
      check.Add(p + ".cluster", str::Cat("unknown cluster '", r.cluster(), "'"));
    }
    if (!r.prefix_rewrite().empty()) {
      if (m.prefix().empty()) check.Add(p + ".prefix_rewrite", "only allowed with match.prefix");
      if (r.prefix_rewrite()[0] != '/') check.Add(p + ".prefix_rewrite", "must start with '/'");
    }
    if (!r.host_rewrite().empty() && !IsValidHost(r.host_rewrite())) {
      // Host may carry a port: accept host[:port].
      const size_t colon = r.host_rewrite().rfind(':');
      if (colon == std::string::npos || !IsValidHost(r.host_rewrite().substr(0, colon))) {
        check.Add(p + ".host_rewrite", str::Cat("'", r.host_rewrite(), "' is not a host[:port]"));
      }
    }
    check.Duration(p + ".request_timeout", r.request_timeout());
    if (r.has_websocket_policy()) check.WebSocket(p + ".websocket_policy", r.websocket_policy());
    if (r.has_client_limits()) check.Limits(p + ".client_limits", r.client_limits(), true);
    // A per-cookie WebSocket cap needs a cookie to count.
    const bool per_cookie = r.client_limits().has_max_websockets_per_cookie() ||
                            s.client_limits().has_max_websockets_per_cookie();
    if (r.websocket() && per_cookie && r.client_limits().websocket_cookie().empty() &&
        s.client_limits().websocket_cookie().empty() &&
        r.websocket_policy().required_cookie().empty() &&
        s.websocket_policy().required_cookie().empty()) {
      check.Add(p + ".client_limits.max_websockets_per_cookie",
                "needs a cookie to count: set client_limits.websocket_cookie or "
                "websocket_policy.required_cookie");
    }
    if (r.has_cookie_policy())
      check.Cookies(p + ".cookie_policy", r.cookie_policy(), cookie_domain);
  }
  CheckUniqueNames(check, s.routes(), "routes");

  check.WebSocket("websocket_policy", s.websocket_policy());
  check.Cookies("cookie_policy", s.cookie_policy(), cookie_domain);
  return errors;
}

FieldErrors ValidateDataplaneBootstrap(const v1::DataplaneBootstrap& b) {
  FieldErrors errors;
  Checker check(errors);
  if (!b.node().id().empty() && !IsValidName(b.node().id())) {
    check.Add("node.id", str::Cat("'", b.node().id(), "' is not a valid node id"));
  }
  if (!b.admin().address().empty() && !Checker::IsIpLiteral(b.admin().address())) {
    check.Add("admin.address", str::Cat("'", b.admin().address(), "' is not an IP address"));
  }
  if (b.admin().has_port()) check.Port("admin.port", b.admin().port(), /*allow_zero=*/true);
  if (b.workers() > 256) check.Add("workers", str::Cat("must be 0..256, got ", b.workers()));
  if (!b.worker_io().empty() && b.worker_io() != "auto" && b.worker_io() != "epoll" &&
      b.worker_io() != "io_uring") {
    check.Add("worker_io", str::Cat("must be auto, epoll or io_uring, got '", b.worker_io(), "'"));
  }
  if (b.has_worker_slice()) {
    // Linux clamps a thread's slice to 0.1-100 ms; a value outside is a mistake, not a wish.
    // (Seconds are compared apart: a Duration's seconds times 1e9 can overflow.)
    const google::protobuf::Duration& d = b.worker_slice();
    const bool ok =
        d.seconds() == 0 && (d.nanos() == 0 || (d.nanos() >= 100000 && d.nanos() <= 100000000));
    if (!ok) {
      check.Add("worker_slice", str::Cat("must be 0s (the kernel's slice) or 100us to 100ms, got ",
                                         d.seconds() != 0 ? str::Cat(d.seconds(), "s")
                                                          : str::Cat(d.nanos() / 1000, "us")));
    }
  }
  if (b.has_controlplane()) {
    const v1::ControlPlaneSource& cp = b.controlplane();
    if (str::StripWhitespace(cp.address()).empty()) {
      check.Add("controlplane.address", "required (host:port of the control plane)");
    }
    // One host:port, or a comma-separated list of them (control-plane replicas).
    for (std::string_view piece : str::Split(cp.address(), ',')) {
      const std::string_view item = str::StripWhitespace(piece);
      if (item.empty() && str::StripWhitespace(cp.address()).empty()) break;
      const size_t colon = item.rfind(':');
      uint32_t port = 0;
      if (colon == std::string_view::npos ||
          !IsValidHost(str::StripSuffix(str::StripPrefix(item.substr(0, colon), "["), "]")) ||
          !str::ParseInt(item.substr(colon + 1), port) || port == 0 || port > 65535) {
        check.Add("controlplane.address",
                  str::Cat("'", item, "' is not host:port",
                           item.size() == cp.address().size() ? "" : " (in a list)"));
      }
    }
    if (cp.cert_file().empty() != cp.key_file().empty()) {
      check.Add("controlplane.cert_file", "cert_file and key_file go together");
    }
    if (!cp.cert_file().empty() && cp.ca_file().empty()) {
      check.Add("controlplane.cert_file", "a client certificate needs TLS: set ca_file too");
    }
    // The control plane refuses other node ids (a metric label and a log field).
    const std::string& id = b.node().id();
    bool id_ok = id.size() <= 63;
    for (const char c : id) id_ok = id_ok && (str::IsAlnum(c) || c == '.' || c == '_' || c == '-');
    if (!id_ok) {
      check.Add("node.id", str::Cat("'", id, "': at most 63 of A-Z a-z 0-9 . _ -"));
    }
    check.Duration("controlplane.backoff_initial", cp.backoff_initial());
    check.Duration("controlplane.backoff_max", cp.backoff_max());
    check.Duration("controlplane.report_interval", cp.report_interval());
  } else if (!b.has_snapshot()) {
    check.Add("snapshot", "required in static mode (no controlplane section)");
  }
  if (b.has_snapshot()) {
    const size_t from = errors.size();
    FieldErrors inner = ValidateSnapshot(b.snapshot());
    errors.insert(errors.end(), inner.begin(), inner.end());
    Prefix(errors, from, "snapshot");
  }
  check.Duration("drain.delay", b.drain().delay());
  check.Duration("drain.timeout", b.drain().timeout());
  const std::string& fmt = b.access_log().format();
  if (!fmt.empty() && fmt != "json" && fmt != "text") {
    check.Add("access_log.format", str::Cat("must be json or text, got '", fmt, "'"));
  }
  const std::string& level = b.logging().level();
  if (!level.empty() && level != "debug" && level != "info" && level != "warn" &&
      level != "error") {
    check.Add("logging.level", str::Cat("must be debug, info, warn or error, got '", level, "'"));
  }
  return errors;
}

FieldErrors ValidateControlplaneConfig(const v1::ControlplaneConfig& c) {
  FieldErrors errors;
  Checker check(errors);
  if (!c.grpc().address().empty() && !Checker::IsIpLiteral(c.grpc().address())) {
    check.Add("grpc.address", str::Cat("'", c.grpc().address(), "' is not an IP address"));
  }
  if (c.grpc().has_port()) check.Port("grpc.port", c.grpc().port(), /*allow_zero=*/true);
  if (c.grpc().cert_file().empty() != c.grpc().key_file().empty()) {
    check.Add("grpc.cert_file", "cert_file and key_file go together");
  }
  if (!c.http().address().empty() && !Checker::IsIpLiteral(c.http().address())) {
    check.Add("http.address", str::Cat("'", c.http().address(), "' is not an IP address"));
  }
  if (c.http().has_port()) check.Port("http.port", c.http().port(), /*allow_zero=*/true);
  if (c.store().has_keep_versions() && c.store().keep_versions() < 2) {
    check.Add("store.keep_versions",
              str::Cat("must be at least 2, got ", c.store().keep_versions()));
  }
  if (c.store().has_etcd()) {
    const v1::EtcdStore& e = c.store().etcd();
    if (!c.store().directory().empty()) {
      check.Add("store.directory",
                "store.directory and store.etcd exclude each other: the "
                "store is either a local directory or etcd");
    }
    if (e.endpoints().empty()) {
      check.Add("store.etcd.endpoints",
                "at least one etcd client URL is required, e.g. "
                "http://127.0.0.1:2379");
    }
    bool any_https = false;
    for (int i = 0; i < e.endpoints_size(); ++i) {
      const std::string path = str::Cat("store.etcd.endpoints[", i, "]");
      std::string_view url = e.endpoints(i);
      if (str::ConsumePrefix(url, "https://")) {
        any_https = true;
      } else if (!str::ConsumePrefix(url, "http://")) {
        check.Add(path, str::Cat("'", e.endpoints(i), "' must start with http:// or https://"));
        continue;
      }
      if (url.ends_with("/")) url.remove_suffix(1);
      const size_t colon = url.rfind(':');
      uint64_t port = 0;
      std::string_view host = colon == std::string_view::npos ? url : url.substr(0, colon);
      if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
      }
      if (colon == std::string_view::npos || !str::ParseInt(url.substr(colon + 1), port) ||
          port == 0 || port > 65535 || host.empty() ||
          (!IsValidHost(host) && !Checker::IsIpLiteral(host))) {
        check.Add(path, str::Cat("'", e.endpoints(i), "' is not SCHEME://HOST:PORT"));
      }
    }
    if (any_https && e.ca_file().empty()) {
      check.Add("store.etcd.ca_file",
                "https endpoints need the CA that signed etcd's "
                "certificates");
    }
    if (!e.ca_file().empty() && !any_https) {
      check.Add("store.etcd.ca_file", "set, but no endpoint is https://");
    }
    if (e.cert_file().empty() != e.key_file().empty()) {
      check.Add("store.etcd.cert_file", "cert_file and key_file go together");
    }
    if (!e.cert_file().empty() && !any_https) {
      check.Add("store.etcd.cert_file", "a client certificate needs https:// endpoints");
    }
    if (!e.prefix().empty() &&
        (e.prefix().front() != '/' || e.prefix().back() != '/' || e.prefix().size() < 2)) {
      check.Add("store.etcd.prefix",
                str::Cat("must start and end with '/', e.g. /onedomain/, got '", e.prefix(), "'"));
    }
    for (const auto& [name, d] : {std::pair{"dial_timeout", &e.dial_timeout()},
                                  std::pair{"request_timeout", &e.request_timeout()}}) {
      const std::string path = str::Cat("store.etcd.", name);
      const bool set =
          name == std::string_view("dial_timeout") ? e.has_dial_timeout() : e.has_request_timeout();
      if (set &&
          (d->seconds() < 0 || d->nanos() < 0 || (d->seconds() == 0 && d->nanos() < 10000000))) {
        check.Add(path, "must be at least 10ms");
      }
    }
  }
  if (c.nodes().has_max_nodes() && c.nodes().max_nodes() == 0) {
    check.Add("nodes.max_nodes", "must be at least 1");
  }
  if (c.nodes().has_forget_after() &&
      ToChrono(c.nodes().forget_after()) < std::chrono::seconds(1)) {
    check.Add("nodes.forget_after", "must be at least 1s");
  }
  if (!c.grpc().client_ca_file().empty() && c.grpc().cert_file().empty()) {
    check.Add("grpc.client_ca_file", "needs grpc.cert_file and grpc.key_file (mTLS is TLS)");
  }
  if (c.has_seed()) {
    const size_t from = errors.size();
    FieldErrors inner = ValidateSnapshot(c.seed());
    errors.insert(errors.end(), inner.begin(), inner.end());
    Prefix(errors, from, "seed");
  }
  const std::string& level = c.logging().level();
  if (!level.empty() && level != "debug" && level != "info" && level != "warn" &&
      level != "error") {
    check.Add("logging.level", str::Cat("must be debug, info, warn or error, got '", level, "'"));
  }
  return errors;
}

}  // namespace onedomain::config
