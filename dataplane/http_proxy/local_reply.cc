#include "dataplane/http_proxy/local_reply.h"

#include "common/strings/strings.h"

namespace onedomain::dataplane {
namespace {

struct KindInfo {
  int status;
  std::string_view name;
  std::string_view summary;  // the body's first words
};

KindInfo Info(ProxyErrorKind kind) {
  using K = ProxyErrorKind;
  switch (kind) {
    case K::kMalformedRequest:
      return {400, "malformed_request", "malformed request"};
    case K::kSmuggling:
      return {400, "ambiguous_framing", "ambiguous request framing"};
    case K::kBadHost:
      return {400, "bad_host", "bad Host header"};
    case K::kBadTarget:
      return {400, "bad_target", "bad request-target"};
    case K::kPlainHttpOnTlsPort:
      return {400, "plain_http_on_tls_port", "this port expects TLS (https://)"};
    case K::kNoRoute:
      return {404, "no_route", "no route matches this request"};
    case K::kHeaderTimeout:
      return {408, "header_timeout", "request header not received in time"};
    case K::kBodyTimeout:
      return {408, "body_timeout", "request body not received in time"};
    case K::kBodyTooLarge:
      return {413, "body_too_large", "request body too large"};
    case K::kHeaderTooLarge:
      return {431, "header_too_large", "request header fields too large"};
    case K::kBadWebSocketUpgrade:
      return {400, "bad_websocket_upgrade", "malformed WebSocket upgrade"};
    case K::kWebSocketNotAllowed:
      return {403, "websocket_not_allowed", "WebSocket upgrades are not allowed on this route"};
    case K::kOriginRefused:
      return {403, "origin_refused", "WebSocket Origin not allowed"};
    case K::kCookieRequired:
      return {401, "cookie_required", "WebSocket upgrade needs a session cookie"};
    case K::kRateLimited:
      return {429, "rate_limited", "too many requests from this client"};
    case K::kTooManyWebSockets:
      return {429, "too_many_websockets", "too many WebSockets open for this client"};
    case K::kUnsupportedProtocol:
      return {501, "unsupported_protocol", "only the websocket protocol can be tunnelled"};
    case K::kUpstreamConnectFailed:
      return {502, "upstream_connect_failed", "upstream refused the connection"};
    case K::kUpstreamReset:
      return {502, "upstream_reset", "upstream closed the connection before answering"};
    case K::kUpstreamBadResponse:
      return {502, "upstream_bad_response", "upstream sent a malformed response"};
    case K::kNoHealthyUpstream:
      return {503, "no_healthy_upstream", "no healthy upstream endpoint"};
    case K::kUpstreamPoolFull:
      return {503, "upstream_pool_full", "upstream connection limit reached"};
    case K::kUpstreamConnectTimeout:
      return {504, "upstream_connect_timeout", "upstream connection timed out"};
    case K::kUpstreamResponseTimeout:
      return {504, "upstream_response_timeout", "upstream did not answer in time"};
    case K::kRequestTimeout:
      return {504, "request_timeout", "request did not complete in time"};
  }
  return {500, "internal", "internal error"};
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Error";
  }
}

}  // namespace

int StatusOf(ProxyErrorKind kind) { return Info(kind).status; }
std::string_view NameOf(ProxyErrorKind kind) { return Info(kind).name; }

int RenderLocalReply(const ProxyError& error, const LocalReplyOptions& options,
                     RequestRecord& record, std::string& out) {
  const KindInfo info = Info(error.kind);
  // Body: "<status> <reason>: <summary>[ (<detail>)]\n" — says what happened and which side
  // failed, without reflecting anything the client sent.
  char body[256];
  std::string_view reason = ReasonPhrase(info.status);
  int len = std::snprintf(body, sizeof(body), "%d %.*s: %.*s", info.status,
                          static_cast<int>(reason.size()), reason.data(),
                          static_cast<int>(info.summary.size()), info.summary.data());
  if (!error.detail.empty() && error.detail != info.summary && len > 0) {
    len += std::snprintf(body + len, sizeof(body) - static_cast<size_t>(len), " (%.*s)",
                         static_cast<int>(error.detail.size()), error.detail.data());
  }
  if (len < 0) len = 0;
  size_t body_len = std::min(static_cast<size_t>(len), sizeof(body) - 2);
  body[body_len++] = '\n';

  const size_t start = out.size();
  str::Append(out, "HTTP/1.1 ", info.status, " ", reason, "\r\n");
  out.append("Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n");
  str::Append(out, "Content-Length: ", body_len, "\r\n");
  if (error.retry_after > 0) str::Append(out, "Retry-After: ", error.retry_after, "\r\n");
  if (options.close) out.append("Connection: close\r\n");
  out.append("\r\n");
  if (!options.head_request) out.append(body, body_len);

  record.status = info.status;
  record.error = error.kind;
  record.bytes_sent += out.size() - start;
  return info.status;
}

bool KeepAliveAfterLocalReply(ProxyErrorKind kind, bool request_fully_read) {
  if (!request_fully_read) return false;
  switch (kind) {
    case ProxyErrorKind::kNoRoute:
    case ProxyErrorKind::kNoHealthyUpstream:
    case ProxyErrorKind::kUpstreamPoolFull:
    case ProxyErrorKind::kUpstreamConnectFailed:
    case ProxyErrorKind::kUpstreamConnectTimeout:
    case ProxyErrorKind::kRateLimited:
    case ProxyErrorKind::kTooManyWebSockets:
      return true;  // the client's request was fine and fully read; its connection is too
    default:
      return false;  // framing errors, timeouts mid-exchange: the stream position is unknown
  }
}

}  // namespace onedomain::dataplane
