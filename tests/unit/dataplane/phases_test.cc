#include "dataplane/http_proxy/phases.h"

#include <gtest/gtest.h>

#include <string>

#include "dataplane/cookie/cookie_policy.h"
#include "dataplane/routing/route_table.h"
#include "onedomain/v1/cookie_policy.pb.h"

namespace onedomain::dataplane {
namespace {

// Parses `raw` into `head` (the string must outlive the head's views).
void Parse(const std::string& raw, RequestHead& head) {
  RequestHeadParser parser(head, 65536);
  boost::system::error_code ec;
  ASSERT_TRUE(parser.Feed(raw, ec)) << ec.message();
}

std::string Upstream(const RequestHead& head, const CompiledRoute* route = nullptr,
                     const CompiledCookiePolicy* cookies = nullptr, bool strip_expect = false) {
  UpstreamHeadParams p;
  p.route = route;
  p.client_ip = "10.0.0.7";
  p.forwarded_proto = "https";
  p.default_host = "backend:8000";
  p.strip_expect = strip_expect;
  p.cookies = cookies;
  std::string out;
  AppendUpstreamRequestHead(head, p, out);
  return out;
}

TEST(PhasesTest, StripsHopByHopAndSetsForwardedFields) {
  const std::string raw =
      "GET /api/v1/x?y=1 HTTP/1.1\r\n"
      "Host: amir.hirecj.ai\r\n"
      "Connection: keep-alive, X-Secret-Hop\r\n"
      "Keep-Alive: timeout=5\r\n"
      "Proxy-Authorization: Basic Zm9v\r\n"
      "Proxy-Connection: keep-alive\r\n"
      "TE: trailers\r\n"
      "Trailer: X-Sum\r\n"
      "Upgrade: h2c\r\n"
      "X-Secret-Hop: 1\r\n"
      "X-Forwarded-For: 1.1.1.1\r\n"
      "X-Forwarded-Proto: gopher\r\n"
      "X-Forwarded-Host: evil\r\n"
      "x-forwarded-for: 2.2.2.2, 3.3.3.3\r\n"
      "Cookie: sess_abc=1; theme=dark\r\n"
      "Accept: */*\r\n\r\n";
  RequestHead head;
  Parse(raw, head);
  const std::string out = Upstream(head);
  EXPECT_TRUE(out.starts_with("GET /api/v1/x?y=1 HTTP/1.1\r\nHost: amir.hirecj.ai\r\n")) << out;
  for (const char* gone : {"Connection:", "Keep-Alive", "Proxy-", "TE:", "Trailer", "Upgrade",
                           "X-Secret-Hop", "gopher", "evil"}) {
    EXPECT_EQ(out.find(gone), std::string::npos) << gone << "\n" << out;
  }
  EXPECT_NE(out.find("\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.7\r\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\r\nX-Forwarded-Proto: https\r\n"), std::string::npos);
  EXPECT_NE(out.find("\r\nX-Forwarded-Host: amir.hirecj.ai\r\n"), std::string::npos);
  EXPECT_NE(out.find("\r\nCookie: sess_abc=1; theme=dark\r\n"), std::string::npos);
  EXPECT_NE(out.find("\r\nAccept: */*\r\n"), std::string::npos);
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));
}

TEST(PhasesTest, CookieHeadersPassByteForByteInOrder) {
  const std::string raw =
      "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1;b=2\r\nX: y\r\nCookie:  c=\"q; r\" \r\n\r\n";
  RequestHead head;
  Parse(raw, head);
  const std::string out = Upstream(head);
  const size_t first = out.find("Cookie: a=1;b=2\r\n");
  const size_t second = out.find("Cookie: c=\"q; r\"\r\n");
  ASSERT_NE(first, std::string::npos) << out;
  ASSERT_NE(second, std::string::npos) << out;
  EXPECT_LT(first, second);
}

TEST(PhasesTest, NormalisesFramingAndExpect) {
  {
    const std::string raw =
        "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
        "Expect: 100-continue\r\n\r\n";
    RequestHead head;
    Parse(raw, head);
    EXPECT_TRUE(head.expect_continue);
    const std::string out = Upstream(head, nullptr, nullptr, /*strip_expect=*/true);
    EXPECT_EQ(out.find("Expect"), std::string::npos);
    EXPECT_EQ(out.find("Content-Length: 5\r\n"), out.rfind("Content-Length: 5\r\n")) << out;
  }
  {
    const std::string raw = "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    RequestHead head;
    Parse(raw, head);
    const std::string out = Upstream(head);
    EXPECT_NE(out.find("Transfer-Encoding: chunked\r\n"), std::string::npos);
    EXPECT_TRUE(HasRequestBody(head));
  }
}

TEST(PhasesTest, HostRules) {
  RequestHead head;
  const std::string none = "GET / HTTP/1.1\r\nX: y\r\n\r\n";
  Parse(none, head);
  ASSERT_TRUE(CheckRequest(head).has_value());
  EXPECT_EQ(CheckRequest(head)->kind, ProxyErrorKind::kBadHost);
  const std::string two = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
  Parse(two, head);
  ASSERT_TRUE(CheckRequest(head).has_value());
  const std::string old = "GET / HTTP/1.0\r\n\r\n";
  Parse(old, head);
  EXPECT_FALSE(CheckRequest(head).has_value());
  EXPECT_NE(Upstream(head).find("\r\nHost: backend:8000\r\n"), std::string::npos);
  const std::string connect = "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n";
  Parse(connect, head);
  ASSERT_TRUE(CheckRequest(head).has_value());
  EXPECT_EQ(CheckRequest(head)->kind, ProxyErrorKind::kBadTarget);
}

TEST(PhasesTest, BodyLimitAndUpgradeDetection) {
  RequestHead head;
  const std::string post = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n";
  Parse(post, head);
  EXPECT_FALSE(CheckBodyLimit(head, 100).has_value());
  EXPECT_FALSE(CheckBodyLimit(head, 0).has_value());
  ASSERT_TRUE(CheckBodyLimit(head, 99).has_value());
  EXPECT_EQ(CheckBodyLimit(head, 99)->kind, ProxyErrorKind::kBodyTooLarge);

  const std::string ws =
      "GET /ws/chat/1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
      "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n\r\n";
  Parse(ws, head);
  EXPECT_TRUE(IsWebSocketUpgrade(head));
  const std::string h2c =
      "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
  Parse(h2c, head);
  EXPECT_FALSE(IsWebSocketUpgrade(head));
  const std::string no_conn = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
  Parse(no_conn, head);
  EXPECT_FALSE(IsWebSocketUpgrade(head));
}

TEST(PhasesTest, RewritesTargetAndHost) {
  CompiledRoute route;
  route.path = "/api/";
  route.prefix_rewrite = "/";
  route.host_rewrite = "internal:8080";
  RequestHead head;
  const std::string raw = "GET /api/v1/items?q=1 HTTP/1.1\r\nHost: public\r\n\r\n";
  Parse(raw, head);
  const std::string out = Upstream(head, &route);
  EXPECT_TRUE(out.starts_with("GET /v1/items?q=1 HTTP/1.1\r\nHost: internal:8080\r\n")) << out;
  EXPECT_NE(out.find("X-Forwarded-Host: public\r\n"), std::string::npos);
  std::string target;
  AppendUpstreamTarget("http://public/api/x", nullptr, target);
  EXPECT_EQ(target, "/api/x");
}

TEST(PhasesTest, ResponseHeadKeepsSetCookiesAndStripsHopByHop) {
  const std::string raw =
      "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/; HttpOnly\r\nConnection: keep-alive, X-Hop\r\n"
      "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: b=2;Secure\r\nContent-Length: 3\r\n"
      "Content-Length: 3\r\n\r\n";
  ResponseHead resp;
  ResponseHeadParser parser(resp, 65536, false);
  boost::system::error_code ec;
  ASSERT_TRUE(parser.Feed(raw, ec));
  std::string out;
  DownstreamHeadParams p;
  p.close = true;
  AppendDownstreamResponseHead(resp, p, out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/; HttpOnly\r\nSet-Cookie: b=2;Secure\r\n"
            "Content-Length: 3\r\nConnection: close\r\n\r\n");
}

TEST(PhasesTest, ResponseForHttp10ClientsDechunks) {
  const std::string raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  ResponseHead resp;
  ResponseHeadParser parser(resp, 65536, false);
  boost::system::error_code ec;
  ASSERT_TRUE(parser.Feed(raw, ec));
  std::string out;
  DownstreamHeadParams p;
  p.client_version = 10;
  p.dechunk = true;
  p.close = true;
  AppendDownstreamResponseHead(resp, p, out);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
}

TEST(PhasesTest, CookiePolicyAppliesWhenSet) {
  v1::CookiePolicy policy;
  policy.mutable_request_cookies()->set_mode(v1::RequestCookies::MODE_ALLOW_LIST);
  policy.mutable_request_cookies()->add_names("sess_*");
  const CompiledCookiePolicy cookies(policy);
  RequestHead head;
  const std::string raw =
      "GET / HTTP/1.1\r\nHost: h\r\nCookie: theme=dark; sess_1=abc\r\nCookie: x=1\r\n\r\n";
  Parse(raw, head);
  const std::string out = Upstream(head, nullptr, &cookies);
  EXPECT_NE(out.find("\r\nCookie: sess_1=abc\r\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("theme"), std::string::npos);
  EXPECT_EQ(out.find("x=1"), std::string::npos);
}

}  // namespace

std::string Dots(std::string_view path) {
  std::string out;
  RemoveDotSegments(path, out);
  return out;
}

TEST(PhasesTest, RemovesDotSegmentsIncludingPercentEncodedOnes) {
  EXPECT_EQ(Dots("/ws/../api/v1/echo"), "/api/v1/echo");
  EXPECT_EQ(Dots("/a/./b"), "/a/b");
  EXPECT_EQ(Dots("/a/b/.."), "/a/");
  EXPECT_EQ(Dots("/a/b/."), "/a/b/");
  EXPECT_EQ(Dots("/../../x"), "/x");
  EXPECT_EQ(Dots("/ws/%2e%2e/api"), "/api");
  EXPECT_EQ(Dots("/ws/%2E./api"), "/api");
  EXPECT_EQ(Dots("/ws/.%2e/api"), "/api");
  EXPECT_EQ(Dots("/ws/%2e/x"), "/ws/x");
  EXPECT_EQ(Dots("/a..b/.c/d."), "/a..b/.c/d.");  // dots inside names stay
  EXPECT_EQ(Dots("/"), "/");
  EXPECT_EQ(Dots("/a//b/../c"), "/a//c");
}

TEST(PhasesTest, NormalizeRequestRoutesOnTheNormalisedPath) {
  const std::string raw = "GET /ws/../api/v1/echo?q=/../x HTTP/1.1\r\nHost: h\r\n\r\n";
  RequestHead head;
  Parse(raw, head);
  std::string storage;
  EXPECT_FALSE(NormalizeRequest(head, storage).has_value());
  EXPECT_EQ(head.target, "/api/v1/echo?q=/../x");  // the query is not a path
  EXPECT_NE(Upstream(head).find("GET /api/v1/echo?q=/../x HTTP/1.1\r\n"), std::string::npos);
}

TEST(PhasesTest, NormalizeRequestRefusesBadBytesAndHosts) {
  for (const std::string& raw : {
           std::string("GET /a\xff HTTP/1.1\r\nHost: h\r\n\r\n"),
           std::string("GET /a\x80"
                       "b HTTP/1.1\r\nHost: h\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: h/x\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: user@h\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: h:80x\r\n\r\n"),
           std::string("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"),
       }) {
    RequestHead head;
    RequestHeadParser parser(head, 65536);
    boost::system::error_code ec;
    if (!parser.Feed(raw, ec)) continue;  // the parser refusing it is fine too
    std::string storage;
    const auto err = NormalizeRequest(head, storage);
    ASSERT_TRUE(err.has_value()) << raw;
    EXPECT_EQ(StatusOf(err->kind), 400) << raw;
  }
  for (const std::string ok : {"h", "h:8080", "[::1]:3456", "a-b.example.com", ""}) {
    const std::string raw = "GET / HTTP/1.1\r\nHost: " + ok + "\r\n\r\n";
    RequestHead head;
    Parse(raw, head);
    std::string storage;
    EXPECT_FALSE(NormalizeRequest(head, storage).has_value()) << ok;
  }
}

TEST(PhasesTest, AbsoluteFormAuthorityWinsOverHost) {
  const std::string raw =
      "GET http://amir.hirecj.ai/api/x?y=1 HTTP/1.1\r\nHost: other.example\r\n\r\n";
  RequestHead head;
  Parse(raw, head);
  std::string storage;
  EXPECT_FALSE(NormalizeRequest(head, storage).has_value());
  EXPECT_EQ(head.host, "amir.hirecj.ai");
  EXPECT_EQ(head.target, "/api/x?y=1");
  const std::string up = Upstream(head);
  EXPECT_NE(up.find("GET /api/x?y=1 HTTP/1.1\r\n"), std::string::npos) << up;
  EXPECT_NE(up.find("Host: amir.hirecj.ai\r\n"), std::string::npos) << up;
  EXPECT_EQ(up.find("other.example"), std::string::npos) << up;
  EXPECT_NE(up.find("X-Forwarded-Host: amir.hirecj.ai\r\n"), std::string::npos) << up;
}

}  // namespace onedomain::dataplane
