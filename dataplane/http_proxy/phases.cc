#include "dataplane/http_proxy/phases.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

#include "common/strings/strings.h"
#include "dataplane/cookie/cookie_policy.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/stats/dataplane_stats.h"

namespace onedomain::dataplane {
namespace {

void CountCookieRewrite(const CompiledCookiePolicy::RewriteResult& r,
                        stats::CookieCounters& counters) {
  if (r.unparsed) counters.unparsed.Add();
  for (uint64_t bits = r.rules; bits != 0; bits &= bits - 1) {
    counters.rule_hits[static_cast<size_t>(__builtin_ctzll(bits))].Add();
  }
}

bool HasToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    if (str::EqualsIgnoreCase(str::StripWhitespace(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// One size check and two copies per field rather than four appends (each with its own).
void AppendField(std::string& out, std::string_view name, std::string_view value) {
  const size_t at = out.size();
  out.resize(at + name.size() + value.size() + 4);
  char* p = out.data() + at;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  *p++ = ':';
  *p++ = ' ';
  if (!value.empty()) std::memcpy(p, value.data(), value.size());
  p += value.size();
  *p++ = '\r';
  *p = '\n';
}

void AppendDecimal(std::string& out, uint64_t v) { str::Append(out, v); }

}  // namespace

bool ConnectionTokens::Contains(std::string_view name) const {
  for (size_t i = 0; i < count; ++i) {
    if (str::EqualsIgnoreCase(names[i], name)) return true;
  }
  return false;
}

bool IsHopByHop(const HeaderField& f, const ConnectionTokens& tokens) {
  switch (f.id) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_connection:
    case http::field::te:
    case http::field::trailer:
    case http::field::transfer_encoding:
    case http::field::upgrade:
      return true;
    default:
      break;
  }
  // Most names do not start with 'p': no call for them.
  if (f.name.size() >= 6 && (f.name[0] | 0x20) == 'p' &&
      str::EqualsIgnoreCase(f.name.substr(0, 6), "proxy-")) {
    return true;
  }
  return tokens.count > 0 && tokens.Contains(f.name);
}

std::optional<ProxyError> CheckRequest(const RequestHead& head) {
  if (head.host_count > 1) return ProxyError{ProxyErrorKind::kBadHost, "more than one Host header"};
  if (head.version >= 11 && head.host_count == 0) {
    return ProxyError{ProxyErrorKind::kBadHost, "HTTP/1.1 request without a Host header"};
  }
  if (head.method == http::verb::connect) {
    return ProxyError{ProxyErrorKind::kBadTarget, "CONNECT is not supported"};
  }
  if (PathOfTarget(head.target).empty()) {
    return ProxyError{ProxyErrorKind::kBadTarget, "request-target is not a path"};
  }
  if (CollectConnectionTokens(head.fields).overflow) {
    return ProxyError{ProxyErrorKind::kMalformedRequest, "too many Connection options"};
  }
  return std::nullopt;
}

namespace {

bool IsHostChar(char c) {
  // RFC 3986 reg-name: unreserved / pct-encoded / sub-delims.
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '-':
    case '.':
    case '_':
    case '~':
    case '%':
    case '!':
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')':
    case '*':
    case '+':
    case ',':
    case ';':
    case '=':
      return true;
    default:
      return false;
  }
}

// uri-host [ ":" port ] (RFC 9110 7.2); IP literals in brackets.
bool IsValidAuthority(std::string_view a) {
  std::string_view port;
  if (!a.empty() && a.front() == '[') {
    const size_t close = a.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    for (char c : a.substr(1, close - 1)) {
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
    }
    port = a.substr(close + 1);
    if (!port.empty() && port.front() != ':') return false;
  } else {
    const size_t colon = a.find(':');
    const std::string_view host = a.substr(0, colon);
    for (char c : host) {
      if (!IsHostChar(c)) return false;
    }
    if (colon != std::string_view::npos) port = a.substr(colon);
  }
  if (port.empty()) return true;
  port.remove_prefix(1);  // ':'
  if (port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// "." or its percent-encoded forms.
bool IsDot(std::string_view s) { return s == "." || str::EqualsIgnoreCase(s, "%2e"); }

bool IsDotSegment(std::string_view seg) {
  if (IsDot(seg)) return true;
  // "..", ".%2e", "%2e.", "%2e%2e"
  for (size_t first : {size_t{1}, size_t{3}}) {
    if (seg.size() > first && IsDot(seg.substr(0, first)) && IsDot(seg.substr(first))) {
      return true;
    }
  }
  return false;
}

bool IsDoubleDot(std::string_view seg) { return !IsDot(seg) && IsDotSegment(seg); }

bool MayHaveDotSegment(std::string_view path) {
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '.' || (path[i] == '%' && i + 2 < path.size() && path[i + 1] == '2' &&
                           (path[i + 2] == 'e' || path[i + 2] == 'E'))) {
      return true;
    }
  }
  return false;
}

}  // namespace

void RemoveDotSegments(std::string_view path, std::string& out) {
  // Segments between slashes; "." drops itself, ".." drops itself and the segment before.
  // A trailing dot-segment leaves a trailing slash ("/a/b/.." -> "/a/").
  const size_t base = out.size();
  out.push_back('/');
  size_t pos = 1;
  while (pos <= path.size()) {
    const size_t slash = std::min(path.find('/', pos), path.size());
    const std::string_view seg = path.substr(pos, slash - pos);
    const bool last = slash == path.size();
    if (IsDotSegment(seg)) {
      if (IsDoubleDot(seg) && out.size() > base + 1) {
        // Drop the previous segment: out ends with "/prev/" or "/prev".
        if (out.back() == '/') out.pop_back();
        out.resize(out.rfind('/') + 1);
      }
    } else {
      out.append(seg);
      if (!last) out.push_back('/');
    }
    pos = slash + 1;
  }
}

std::optional<ProxyError> NormalizeRequest(RequestHead& head, std::string& storage) {
  for (char c : head.target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return ProxyError{ProxyErrorKind::kBadTarget, "invalid byte in the request-target"};
    }
  }
  std::string_view target = head.target;
  bool absolute = false;
  if (!target.empty() && target.front() != '/') {
    std::string_view rest = target;
    const size_t colon = rest.find("://");
    if (colon != std::string_view::npos &&
        (str::EqualsIgnoreCase(rest.substr(0, colon), "http") ||
         str::EqualsIgnoreCase(rest.substr(0, colon), "https"))) {
      rest.remove_prefix(colon + 3);
      const size_t end = std::min(rest.find_first_of("/?"), rest.size());
      const std::string_view authority = rest.substr(0, end);
      if (authority.empty() || !IsValidAuthority(authority)) {
        return ProxyError{ProxyErrorKind::kBadHost, "invalid authority in the request-target"};
      }
      head.host = authority;  // RFC 9112 3.2.2: the target's authority wins over Host
      target = rest.substr(end);
      absolute = true;
    }
  }
  if ((head.host_count == 1 || absolute) && !IsValidAuthority(head.host)) {
    return ProxyError{ProxyErrorKind::kBadHost, "invalid Host header"};
  }
  if (!absolute && !MayHaveDotSegment(target)) return std::nullopt;  // the common case

  const size_t q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? "" : target.substr(q);
  storage.clear();
  if (path.empty()) {
    storage.push_back('/');
  } else if (path.front() != '/') {
    return std::nullopt;  // "*" or garbage: CheckRequest answers it
  } else if (MayHaveDotSegment(path)) {
    RemoveDotSegments(path, storage);
  } else {
    storage.append(path);
  }
  storage.append(query);
  head.target = storage;
  return std::nullopt;
}

std::optional<ProxyError> CheckBodyLimit(const RequestHead& head, uint64_t limit) {
  if (limit != 0 && head.framing.content_length && *head.framing.content_length > limit) {
    return ProxyError{ProxyErrorKind::kBodyTooLarge, "request body is larger than allowed"};
  }
  return std::nullopt;
}

bool IsWebSocketUpgrade(const RequestHead& head) {
  return head.framing.connection_upgrade && !head.upgrade.empty() &&
         HasToken(head.upgrade, "websocket");
}

bool IsIdempotent(http::verb method) {
  switch (method) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::options:
    case http::verb::trace:
    case http::verb::put:
    case http::verb::delete_:
      return true;
    default:
      return false;
  }
}

void AppendUpstreamTarget(std::string_view target, const CompiledRoute* route, std::string& out) {
  if (!target.empty() && target.front() != '/') {
    // Absolute-form: send origin-form upstream (RFC 9112 3.2.2).
    std::string_view rest = target;
    if (!str::ConsumePrefix(rest, "http://")) str::ConsumePrefix(rest, "https://");
    const size_t start = rest.find_first_of("/?");
    target = start == std::string_view::npos ? std::string_view("/") : rest.substr(start);
    if (!target.empty() && target.front() == '?') {
      out.push_back('/');
    }
  }
  if (route != nullptr && !route->prefix_rewrite.empty() && !route->exact &&
      target.starts_with(route->path)) {
    out.append(route->prefix_rewrite);
    std::string_view rest = target.substr(route->path.size());
    // "/api/" -> "/" applied to "/api/x" must give "/x", not "//x".
    if (!route->prefix_rewrite.empty() && route->prefix_rewrite.back() == '/' && !rest.empty() &&
        rest.front() == '/') {
      rest.remove_prefix(1);
    }
    out.append(rest);
    return;
  }
  out.append(target);
}

namespace {

// X-Forwarded-* fields the proxy sets itself; Beast has no enum value for them.
enum class ForwardedField { kNone, kFor, kProto, kHost };
ForwardedField ClassifyForwarded(const HeaderField& f) {
  if (f.id != http::field::unknown || f.name.size() < 15 || f.name.size() > 17) {
    return ForwardedField::kNone;
  }
  if (!str::EqualsIgnoreCase(f.name.substr(0, 12), "x-forwarded-")) return ForwardedField::kNone;
  const std::string_view rest = f.name.substr(12);
  if (str::EqualsIgnoreCase(rest, "for")) return ForwardedField::kFor;
  if (str::EqualsIgnoreCase(rest, "proto")) return ForwardedField::kProto;
  if (str::EqualsIgnoreCase(rest, "host")) return ForwardedField::kHost;
  return ForwardedField::kNone;
}

}  // namespace

void AppendUpstreamRequestHead(const RequestHead& head, const UpstreamHeadParams& p,
                               std::string& out) {
  out.append(head.method_text);
  out.push_back(' ');
  AppendUpstreamTarget(head.target, p.route, out);
  out.append(" HTTP/1.1\r\n");

  const ConnectionTokens tokens = CollectConnectionTokens(head.fields);
  const std::string_view host_rewrite =
      p.route != nullptr ? std::string_view(p.route->host_rewrite) : std::string_view();
  // head.host is the Host value, or an absolute-form target's authority (which wins).
  if (head.host_count == 0) {
    AppendField(out, "Host",
                !host_rewrite.empty() ? host_rewrite
                : !head.host.empty()  ? head.host
                                      : p.default_host);
  }

  bool had_xff = false;
  for (const HeaderField& f : head.fields) {
    switch (f.id) {
      case http::field::host:
        AppendField(out, f.name, host_rewrite.empty() ? head.host : host_rewrite);
        continue;
      case http::field::content_length:
        continue;  // re-emitted once, normalised, below
      case http::field::expect:
        if (p.strip_expect) continue;
        break;
      case http::field::cookie:
        if (p.cookies != nullptr) {
          const size_t before = out.size();
          out.append(f.name);
          out.append(": ");
          if (p.cookies->AppendFilteredCookie(f.value, out)) {
            out.append("\r\n");
          } else {
            out.resize(before);  // no cookie left to forward: drop the field
          }
          continue;
        }
        break;
      case http::field::unknown:
        if (const ForwardedField fwd = ClassifyForwarded(f); fwd != ForwardedField::kNone) {
          had_xff = had_xff || fwd == ForwardedField::kFor;
          continue;  // X-Forwarded-For is rebuilt below; Proto and Host are replaced
        }
        break;
      default:
        break;
    }
    if (IsHopByHop(f, tokens)) continue;
    AppendField(out, f.name, f.value);
  }

  // X-Forwarded-For: the earlier hops as the client sent them, in order, then the client;
  // or the client alone when the node decided it (trusted proxies, PROXY protocol).
  out.append("X-Forwarded-For: ");
  if (had_xff && !p.replace_forwarded_for) {
    for (const HeaderField& f : head.fields) {
      if (ClassifyForwarded(f) != ForwardedField::kFor || f.value.empty()) continue;
      out.append(f.value);
      out.append(", ");
    }
  }
  out.append(p.client_ip);
  out.append("\r\n");
  AppendField(out, "X-Forwarded-Proto", p.forwarded_proto);
  if (!head.host.empty()) AppendField(out, "X-Forwarded-Host", head.host);

  if (p.keep_upgrade) {
    AppendField(out, "Connection", "upgrade");
    AppendField(out, "Upgrade", head.upgrade);
  }
  if (head.framing.chunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  } else if (head.framing.content_length) {
    out.append("Content-Length: ");
    AppendDecimal(out, *head.framing.content_length);
    out.append("\r\n");
  }
  out.append("\r\n");
}

void EmitDownstreamResponseFields(const ResponseHead& head, const DownstreamHeadParams& p,
                                  ResponseFieldSink& sink) {
  const ConnectionTokens tokens = CollectConnectionTokens(head.fields);
  for (const HeaderField& f : head.fields) {
    if (f.id == http::field::content_length) continue;  // re-emitted below
    if (p.keep_upgrade && (f.id == http::field::upgrade || f.id == http::field::connection)) {
      sink.Field(f.name, f.value);
      continue;
    }
    if (IsHopByHop(f, tokens)) continue;
    if (f.id == http::field::set_cookie && p.cookies != nullptr) {
      std::string& value = sink.BeginValue(f.name);
      const auto result = p.cookies->AppendRewrittenSetCookie(f.value, p.upstream_host, value);
      if (p.cookie_counters != nullptr) CountCookieRewrite(result, *p.cookie_counters);
      sink.EndValue();
      continue;
    }
    sink.Field(f.name, f.value);
  }
  // 1xx and 204 never carry framing fields; 304 and answers to HEAD keep the ones of the
  // representation (the client knows no body follows).
  const bool framing_allowed = !(head.status / 100 == 1 || head.status == 204);
  if (!p.dechunk && framing_allowed) {
    if (head.framing.chunked) {
      sink.Field("Transfer-Encoding", "chunked");
    } else if (head.framing.content_length) {
      char digits[24];
      const auto [end, ec] =
          std::to_chars(digits, digits + sizeof(digits), *head.framing.content_length);
      sink.Field("Content-Length", std::string_view(digits, static_cast<size_t>(end - digits)));
    }
  }
  if (head.status / 100 != 1) {
    if (p.close) {
      sink.Field("Connection", "close");
    } else if (p.client_version == 10) {
      sink.Field("Connection", "keep-alive");
    }
  }
}

void AppendDownstreamResponseHead(const ResponseHead& head, const DownstreamHeadParams& p,
                                  std::string& out) {
  // HTTP/1.1 text: "Name: value\r\n" per field.
  class TextSink final : public ResponseFieldSink {
   public:
    explicit TextSink(std::string& out) : out_(out) {}
    void Field(std::string_view name, std::string_view value) override {
      AppendField(out_, name, value);
    }
    std::string& BeginValue(std::string_view name) override {
      out_.append(name);
      out_.append(": ");
      return out_;
    }
    void EndValue() override { out_.append("\r\n"); }

   private:
    std::string& out_;
  };
  out.append("HTTP/1.1 ");
  AppendDecimal(out, static_cast<uint64_t>(head.status));
  out.push_back(' ');
  out.append(head.reason);
  out.append("\r\n");
  TextSink sink(out);
  EmitDownstreamResponseFields(head, p, sink);
  out.append("\r\n");
}

}  // namespace onedomain::dataplane
