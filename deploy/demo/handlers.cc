#include "deploy/demo/handlers.h"

#include <string_view>
#include <vector>

#include "common/strings/strings.h"
#include "deploy/demo/frontend_page.h"

namespace onedomain::demo {
namespace {

constexpr size_t kMaxSetCookies = 1000;

std::string JsonStart(const ServerContext& ctx) {
  std::string out = "{\"instance\":";
  AppendJsonString(out, ctx.options.instance);
  return out;
}

std::vector<std::string_view> CookieHeaders(const RequestInfo& req) {
  std::vector<std::string_view> out;
  for (const auto& [name, value] : req.headers) {
    if (str::EqualsIgnoreCase(name, "cookie")) out.push_back(value);
  }
  return out;
}

bool IsGetOrHead(const RequestInfo& req) { return req.method == "GET" || req.method == "HEAD"; }

Reply Echo(const RequestInfo& req, const ServerContext& ctx) {
  std::string out = JsonStart(ctx);
  out.append(",\"method\":");
  AppendJsonString(out, req.method);
  out.append(",\"target\":");
  AppendJsonString(out, req.target);
  out.append(",\"headers\":[");
  for (size_t i = 0; i < req.headers.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.push_back('[');
    AppendJsonString(out, req.headers[i].first);
    out.push_back(',');
    AppendJsonString(out, req.headers[i].second);
    out.push_back(']');
  }
  out.append("],\"cookies\":{");
  // A JSON object cannot repeat a key: the first cookie of a name wins (RFC 6265 sends the
  // most specific first).
  std::vector<std::string_view> seen;
  for (const auto& [name, value] : ParseCookies(CookieHeaders(req))) {
    bool dup = false;
    for (std::string_view s : seen) dup = dup || s == name;
    if (dup) continue;
    if (!seen.empty()) out.push_back(',');
    seen.push_back(name);
    AppendJsonString(out, name);
    out.push_back(':');
    AppendJsonString(out, value);
  }
  str::Append(out, "},\"body_bytes\":", req.body_bytes, ",\"body_sha256\":");
  AppendJsonString(out, req.body_sha256);
  out.append("}");
  return Reply{.body = std::move(out)};
}

Reply Me(const RequestInfo& req, const ServerContext& ctx) {
  const auto session = SessionCookie(ParseCookies(CookieHeaders(req)));
  if (!session) return ErrorReply(401, "no session", ctx);
  std::string out = JsonStart(ctx);
  out.append(",\"session\":");
  AppendJsonString(out, *session);
  out.append("}");
  return Reply{.body = std::move(out)};
}

Reply Redirect(std::string location) {
  Reply r{.status = 302, .content_type = "text/plain; charset=utf-8"};
  r.body = str::Cat("redirecting to ", location, "\n");
  r.headers.emplace_back("Location", std::move(location));
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

Reply Login() { return Redirect(str::Cat("/api/v1/auth/callback?code=", RandomHex(16))); }

Reply Callback(const RequestInfo& req, const ServerContext& ctx) {
  const auto code = QueryParam(req.target, "code");
  if (!code || code->empty()) return ErrorReply(400, "missing code", ctx);
  const Options& o = ctx.options;
  std::string cookie =
      str::Cat("sess_", RandomHex(8), "=", RandomHex(16), "; Path=", o.cookie_path);
  if (!o.cookie_domain.empty()) str::Append(cookie, "; Domain=", o.cookie_domain);
  if (o.cookie_secure) cookie.append("; Secure");
  str::Append(cookie, "; HttpOnly; SameSite=", o.cookie_samesite);
  Reply r = Redirect("/");
  r.headers.emplace_back("Set-Cookie", std::move(cookie));
  return r;
}

Reply SetCookies(const RequestInfo& req, const ServerContext& ctx) {
  size_t n = 0;
  const auto param = QueryParam(req.target, "n");
  if (!param || !str::ParseInt(*param, n) || n > kMaxSetCookies) {
    return ErrorReply(400, "n must be an integer from 0 to 1000", ctx);
  }
  Reply r{.body = str::Cat(JsonStart(ctx), ",\"set_cookies\":", n, "}")};
  for (size_t i = 1; i <= n; ++i) {
    r.headers.emplace_back("Set-Cookie", str::Cat("c", i, "=v", i, "; Path=/"));
  }
  return r;
}

Reply Status(std::string_view code_text, const ServerContext& ctx) {
  int code = 0;
  if (!str::ParseInt(code_text, code) || code < 200 || code > 599) {
    return ErrorReply(400, "status must be from 200 to 599", ctx);
  }
  Reply r{.status = code};
  // 204 and 304 never carry a body.
  if (code != 204 && code != 304) r.body = str::Cat(JsonStart(ctx), ",\"status\":", code, "}");
  return r;
}

Reply Slow(const RequestInfo& req, const ServerContext& ctx) {
  uint64_t ms = 0;
  const auto param = QueryParam(req.target, "ms");
  if (!param || !str::ParseInt(*param, ms) || ms > kMaxSlowMs) {
    return ErrorReply(400, "ms must be an integer from 0 to 600000", ctx);
  }
  return Reply{.body = str::Cat(JsonStart(ctx), ",\"slept_ms\":", ms, "}"), .delay_ms = ms};
}

Reply Bytes(const RequestInfo& req, const ServerContext& ctx) {
  uint64_t n = 0;
  const auto param = QueryParam(req.target, "n");
  if (!param || !str::ParseInt(*param, n) || n > kMaxStreamBytes) {
    return ErrorReply(400, "n must be an integer from 0 to 64 GiB", ctx);
  }
  const auto chunked = QueryParam(req.target, "chunked");
  return Reply{.content_type = "application/octet-stream",
               .stream_bytes = true,
               .stream_length = n,
               .stream_chunked = chunked && *chunked == "1"};
}

Reply StatsReply(const ServerContext& ctx) {
  const Stats& s = ctx.stats;
  constexpr auto r = std::memory_order_relaxed;
  return Reply{.body = str::Cat(JsonStart(ctx), ",\"accepts\":", s.accepts.load(r),
                                ",\"frontend_accepts\":", s.frontend_accepts.load(r),
                                ",\"requests\":", s.requests.load(r),
                                ",\"websockets_active\":", s.websockets_active.load(r),
                                ",\"websockets_total\":", s.websockets_total.load(r), "}")};
}

Reply Healthz() { return Reply{.content_type = "text/plain; charset=utf-8", .body = "ok\n"}; }

Reply MethodNotAllowed(const ServerContext& ctx) {
  Reply r = ErrorReply(405, "method not allowed", ctx);
  r.headers.emplace_back("Allow", "GET, HEAD");
  return r;
}

}  // namespace

Reply ErrorReply(int status, std::string_view message, const ServerContext& ctx) {
  std::string out = JsonStart(ctx);
  out.append(",\"error\":");
  AppendJsonString(out, message);
  out.append("}");
  return Reply{.status = status, .body = std::move(out)};
}

Reply HandleApi(const RequestInfo& req, ServerContext& ctx) {
  const std::string_view path = TargetPath(req.target);
  if (path == "/healthz") return Healthz();
  if (path.starts_with("/ws/")) {
    // Reaching here means the request was not a WebSocket upgrade (or not to a chat).
    Reply r = ErrorReply(426, "WebSocket upgrade required at /ws/chat/{id}", ctx);
    r.headers.emplace_back("Upgrade", "websocket");
    return r;
  }
  std::string_view rest = path;
  if (!str::ConsumePrefix(rest, "/api/v1/")) return ErrorReply(404, "not found", ctx);

  // Endpoints with a fixed meaning answer GET (and HEAD) only; everything else under
  // /api/v1/ echoes, whatever the method.
  const bool get = IsGetOrHead(req);
  if (rest == "me") return get ? Me(req, ctx) : MethodNotAllowed(ctx);
  if (rest == "auth/login") return get ? Login() : MethodNotAllowed(ctx);
  if (rest == "auth/callback") return get ? Callback(req, ctx) : MethodNotAllowed(ctx);
  if (rest == "set-cookies") return get ? SetCookies(req, ctx) : MethodNotAllowed(ctx);
  if (rest == "slow") return get ? Slow(req, ctx) : MethodNotAllowed(ctx);
  if (rest == "bytes") return get ? Bytes(req, ctx) : MethodNotAllowed(ctx);
  if (rest == "stats") return get ? StatsReply(ctx) : MethodNotAllowed(ctx);
  if (std::string_view code = rest; str::ConsumePrefix(code, "status/")) {
    return get ? Status(code, ctx) : MethodNotAllowed(ctx);
  }
  return Echo(req, ctx);  // /api/v1/echo, /api/v1/upload and any other /api/v1/ path
}

Reply HandleFrontend(const RequestInfo& req, const ServerContext& ctx) {
  const std::string_view path = TargetPath(req.target);
  if (path == "/healthz") return Healthz();
  if (path == "/") {
    if (!IsGetOrHead(req)) return MethodNotAllowed(ctx);
    Reply r{.content_type = "text/html; charset=utf-8", .body = std::string(FrontendPage())};
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
  }
  return ErrorReply(404, "not found", ctx);
}

}  // namespace onedomain::demo
