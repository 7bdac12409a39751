#include "dataplane/http_proxy/ws_upgrade_checks.h"

#include <google/protobuf/repeated_ptr_field.h>

#include <string>

#include "common/strings/strings.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/routing/route_table.h"
#include "onedomain/v1/websocket_policy.pb.h"

namespace onedomain::dataplane {
namespace {

std::string_view Field(const RequestHead& head, http::field id) {
  for (const HeaderField& f : head.fields) {
    if (f.id == id) return f.value;
  }
  return {};
}

int CountField(const RequestHead& head, http::field id) {
  int n = 0;
  for (const HeaderField& f : head.fields) n += f.id == id ? 1 : 0;
  return n;
}

bool IsBase64Key(std::string_view key) {
  // 16 random bytes in base64: 22 characters and "==".
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (char c : key.substr(0, 22)) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/';
    if (!ok) return false;
  }
  return true;
}

// "HTTPS://Example.COM:443" -> "https://example.com"; false when not scheme://host[:port].
bool NormaliseOrigin(std::string_view in, std::string& out) {
  out.clear();
  const size_t sep = in.find("://");
  if (sep == std::string_view::npos || sep == 0) return false;
  const std::string scheme = str::ToLower(in.substr(0, sep));
  std::string_view rest = in.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);  // tolerate "https://x/"
  if (rest.empty() || rest.find_first_of("/?#@ ") != std::string_view::npos) return false;
  std::string authority = str::ToLower(rest);
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
    const std::string_view port = std::string_view(authority).substr(colon + 1);
    const bool default_port = ((scheme == "http" || scheme == "ws") && port == "80") ||
                              ((scheme == "https" || scheme == "wss") && port == "443");
    if (default_port) authority.resize(colon);
  }
  out = scheme;
  out += "://";
  out += authority;
  return true;
}

}  // namespace

std::optional<ProxyError> CheckUpgradeRequest(const RequestHead& head) {
  if (head.method != http::verb::get) {
    return ProxyError{ProxyErrorKind::kBadWebSocketUpgrade, "WebSocket upgrade must be GET"};
  }
  if (head.version < 11) {
    return ProxyError{ProxyErrorKind::kBadWebSocketUpgrade, "WebSocket upgrade needs HTTP/1.1"};
  }
  if (HasRequestBody(head)) {
    return ProxyError{ProxyErrorKind::kBadWebSocketUpgrade, "WebSocket upgrade with a body"};
  }
  if (CountField(head, http::field::sec_websocket_version) != 1 ||
      str::StripWhitespace(Field(head, http::field::sec_websocket_version)) != "13") {
    return ProxyError{ProxyErrorKind::kBadWebSocketUpgrade, "Sec-WebSocket-Version must be 13"};
  }
  if (CountField(head, http::field::sec_websocket_key) != 1 ||
      !IsBase64Key(Field(head, http::field::sec_websocket_key))) {
    return ProxyError{ProxyErrorKind::kBadWebSocketUpgrade, "bad Sec-WebSocket-Key"};
  }
  return std::nullopt;
}

bool OriginAllowed(std::string_view origin, const OriginList& allowed) {
  std::string want;
  if (!NormaliseOrigin(origin, want)) {
    // "null" (sandboxed frames, file://) and garbage match only "*".
    for (const std::string& a : allowed) {
      if (a == "*") return true;
    }
    return false;
  }
  std::string have;
  for (const std::string& a : allowed) {
    if (a == "*") return true;
    if (NormaliseOrigin(a, have) && have == want) return true;
  }
  return false;
}

bool HasRequiredCookie(const RequestHead& head, std::string_view pattern) {
  if (pattern.empty()) return true;
  const bool prefix = pattern.back() == '*';
  if (prefix) pattern.remove_suffix(1);
  for (const HeaderField& f : head.fields) {
    if (f.id != http::field::cookie) continue;
    std::string_view v = f.value;
    while (!v.empty()) {
      const size_t semi = v.find(';');
      std::string_view pair = str::StripWhitespace(v.substr(0, semi));
      const size_t eq = pair.find('=');
      if (eq != std::string_view::npos) {
        const std::string_view name = str::StripWhitespace(pair.substr(0, eq));
        const std::string_view value = str::StripWhitespace(pair.substr(eq + 1));
        const bool match = prefix ? name.substr(0, pattern.size()) == pattern : name == pattern;
        if (match && !value.empty()) return true;
      }
      if (semi == std::string_view::npos) break;
      v.remove_prefix(semi + 1);
    }
  }
  return false;
}

std::optional<UpgradeRefusal> CheckUpgrade(const RequestHead& head, const CompiledRoute& route,
                                           const OriginList& site_origins) {
  using R = stats::UpgradeResult;
  if (!route.websocket) {
    return UpgradeRefusal{R::kNotAllowed, ProxyError{ProxyErrorKind::kWebSocketNotAllowed}};
  }
  if (auto bad = CheckUpgradeRequest(head)) return UpgradeRefusal{R::kMalformed, *bad};
  const v1::WebSocketPolicy* policy = route.websocket_policy.get();
  const int origins = CountField(head, http::field::origin);
  if (origins > 1) {
    return UpgradeRefusal{R::kOriginRefused,
                          ProxyError{ProxyErrorKind::kOriginRefused, "more than one Origin"}};
  }
  if (origins == 0) {
    if (policy != nullptr && policy->require_origin()) {
      return UpgradeRefusal{R::kOriginRefused,
                            ProxyError{ProxyErrorKind::kOriginRefused, "Origin required"}};
    }
  } else {
    const OriginList& allowed = policy != nullptr && policy->allowed_origins_size() > 0
                                    ? policy->allowed_origins()
                                    : site_origins;
    if (!OriginAllowed(Field(head, http::field::origin), allowed)) {
      return UpgradeRefusal{R::kOriginRefused, ProxyError{ProxyErrorKind::kOriginRefused}};
    }
  }
  if (policy != nullptr && !HasRequiredCookie(head, policy->required_cookie())) {
    return UpgradeRefusal{R::kCookieRefused, ProxyError{ProxyErrorKind::kCookieRequired}};
  }
  return std::nullopt;
}

}  // namespace onedomain::dataplane
