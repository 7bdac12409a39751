#include "dataplane/http2/h2_headers.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dataplane/cookie/cookie_policy.h"
#include "dataplane/http_proxy/phases.h"
#include "onedomain/v1/cookie_policy.pb.h"

namespace onedomain::dataplane::h2 {
namespace {

std::string FieldValue(const RequestHead& head, std::string_view name) {
  std::string out;
  for (const HeaderField& f : head.fields) {
    if (f.name == name) out += std::string(f.value) + "|";
  }
  return out;
}

TEST(H2RequestBuilder, AuthorityBecomesHostAndCookiesAreJoined) {
  H2RequestBuilder b(64 * 1024);
  b.Add(":method", "GET");
  b.Add(":scheme", "https");
  b.Add(":authority", "example.com:8443");
  b.Add(":path", "/api/v1/x?y=1");
  b.Add("cookie", "a=1");
  b.Add("accept", "*/*");
  b.Add("cookie", "b=2");
  b.Add("cookie", "c=3");
  b.Add("host", "other.example");  // :authority wins
  b.Add("te", "trailers");
  RequestHead head;
  std::string_view error;
  ASSERT_TRUE(b.Finish(head, /*end_stream=*/true, error)) << error;
  EXPECT_EQ(head.method, http::verb::get);
  EXPECT_EQ(head.target, "/api/v1/x?y=1");
  EXPECT_EQ(head.host, "example.com:8443");
  EXPECT_EQ(head.host_count, 1);
  EXPECT_EQ(head.fields.front().id, http::field::host);
  EXPECT_EQ(FieldValue(head, "cookie"), "a=1; b=2; c=3|");
  EXPECT_EQ(FieldValue(head, "host"), "example.com:8443|");
  EXPECT_EQ(FieldValue(head, "te"), "");
  EXPECT_EQ(FieldValue(head, "accept"), "*/*|");
  EXPECT_FALSE(head.framing.chunked);
  EXPECT_FALSE(head.framing.content_length);
  EXPECT_TRUE(head.framing.keep_alive);
}

TEST(H2RequestBuilder, BodyFramingForTheUpstream) {
  {
    H2RequestBuilder b(64 * 1024);
    b.Add(":method", "POST");
    b.Add(":path", "/up");
    b.Add(":authority", "h");
    b.Add("content-length", "12");
    RequestHead head;
    std::string_view error;
    ASSERT_TRUE(b.Finish(head, false, error));
    EXPECT_EQ(head.framing.content_length, 12u);
    EXPECT_FALSE(head.framing.chunked);
  }
  {
    H2RequestBuilder b(64 * 1024);
    b.Add(":method", "POST");
    b.Add(":path", "/up");
    b.Add(":authority", "h");
    RequestHead head;
    std::string_view error;
    ASSERT_TRUE(b.Finish(head, false, error));
    EXPECT_TRUE(head.framing.chunked);  // unknown length: chunked toward the HTTP/1.1 upstream
  }
}

TEST(H2RequestBuilder, MethodsMapToTheirVerbs) {
  const std::pair<std::string_view, http::verb> cases[] = {
      {"GET", http::verb::get},         {"POST", http::verb::post},
      {"HEAD", http::verb::head},       {"DELETE", http::verb::delete_},
      {"OPTIONS", http::verb::options}, {"get", http::verb::unknown},
      {"BREW", http::verb::unknown},    {"GETS", http::verb::unknown}};
  for (const auto& [method, verb] : cases) {
    H2RequestBuilder b(64 * 1024);
    b.Add(":method", method);
    b.Add(":path", "/");
    b.Add(":authority", "h");
    RequestHead head;
    std::string_view error;
    ASSERT_TRUE(b.Finish(head, true, error)) << method;
    EXPECT_EQ(head.method, verb) << method;
    EXPECT_EQ(head.method_text, method);
  }
}

TEST(H2RequestBuilder, ExpectContinueIsTheNodesToAnswer) {
  for (const bool end_stream : {false, true}) {
    H2RequestBuilder b(64 * 1024);
    b.Add(":method", "POST");
    b.Add(":path", "/up");
    b.Add(":authority", "h");
    b.Add("expect", "100-Continue");
    RequestHead head;
    std::string_view error;
    ASSERT_TRUE(b.Finish(head, end_stream, error));
    EXPECT_EQ(head.expect_continue, !end_stream);  // no body: nothing to wait for
    EXPECT_EQ(FieldValue(head, "expect"), "");     // never forwarded
  }
}

TEST(H2RequestBuilder, HeaderListOverTheLimitIsCountedNotStored) {
  H2RequestBuilder b(1024);
  b.Add(":method", "GET");
  b.Add(":path", "/");
  for (int i = 0; i < 100; ++i) b.Add("x-filler", std::string(100, 'v'));
  EXPECT_TRUE(b.too_large());
  EXPECT_GT(b.bytes(), 10000u);
}

TEST(ConvertResponseHead, DropsConnectionFieldsAndKeepsSetCookiesApart) {
  H2Response r;
  ASSERT_TRUE(ConvertResponseHead(
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nConnection: close\r\n"
      "Set-Cookie: b=2\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n",
      false, r));
  EXPECT_EQ(r.status, "200");
  std::string fields;
  for (const auto& f : r.fields) {
    fields += r.storage.substr(f.name_off, f.name_size) + "=" +
              r.storage.substr(f.value_off, f.value_size) + ";";
  }
  EXPECT_EQ(fields, "content-type=text/plain;set-cookie=a=1;set-cookie=b=2;");
}

TEST(ConvertResponseHead, TunnelAcceptedBecomes200WithoutAccept) {
  H2Response r;
  ASSERT_TRUE(ConvertResponseHead(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
      "Sec-WebSocket-Accept: xyz\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
      true, r));
  EXPECT_EQ(r.status, "200");
  ASSERT_EQ(r.fields.size(), 1u);
  EXPECT_EQ(r.storage.substr(r.fields[0].name_off, r.fields[0].name_size),
            "sec-websocket-protocol");
}

TEST(ConvertResponseHead, RefusesWhatTheNodeCannotHaveRendered) {
  H2Response r;
  EXPECT_FALSE(ConvertResponseHead("HTTP/1.0 200 OK\r\n\r\n", false, r));
  EXPECT_FALSE(ConvertResponseHead("HTTP/1.1 200 OK\r\nbroken\r\n\r\n", false, r));
}

std::string Fields(const H2Response& r) {
  std::string out = r.status + ";";
  for (const auto& f : r.fields) {
    out += r.storage.substr(f.name_off, f.name_size) + "=" +
           r.storage.substr(f.value_off, f.value_size) + ";";
  }
  return out;
}

// The direct conversion of a parsed upstream head gives the HTTP/2 client exactly what
// rendering the HTTP/1.1 head and converting that text gives: same fields, same order, same
// cookie rewrites, same framing fields.
TEST(ConvertResponseHead, FromTheParsedHeadEqualsRenderingThenConverting) {
  v1::CookiePolicy policy;
  auto* domain = policy.add_domain_rewrites();
  domain->set_from("*");
  domain->set_to(".example.com");
  auto* rule = policy.add_attribute_rules();
  rule->set_name("sess*");
  rule->set_secure(true);
  rule->set_http_only(true);
  const CompiledCookiePolicy cookies(policy);
  const std::vector<std::string> raws = {
      "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
      "Connection: keep-alive\r\nETag: \"x\"\r\nAccept-Ranges: bytes\r\n\r\n",
      "HTTP/1.1 200 OK\r\nSet-Cookie: sess=1; Path=/; HttpOnly\r\nConnection: keep-alive, X-Hop\r\n"
      "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: b=2;Secure;Domain=backend\r\n"
      "Transfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 204 No Content\r\nX-A:    spaced\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\nETag: \"y\"\r\nContent-Length: 99\r\n\r\n",
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: abc=\r\nSec-WebSocket-Protocol: chat\r\n"
      "Set-Cookie: sess=2\r\n\r\n",
      "HTTP/1.1 502 Bad Gateway\r\nproxy-connection: x\r\nUPPER-Case: V\r\nTE: trailers\r\n"
      "Trailer: x\r\nContent-Length: 5\r\n\r\n",
  };
  int rewritten = 0;
  for (const std::string& raw : raws) {
    ResponseHead head;
    ResponseHeadParser parser(head, 65536, false);
    boost::system::error_code ec;
    ASSERT_TRUE(parser.Feed(raw, ec)) << raw;
    for (const bool with_cookies : {false, true}) {
      for (const bool tunnel : {false, true}) {
        DownstreamHeadParams p;
        p.keep_upgrade = tunnel;
        p.upstream_host = "backend";
        if (with_cookies) p.cookies = &cookies;
        std::string text;
        AppendDownstreamResponseHead(head, p, text);
        H2Response via_text, direct;
        ASSERT_TRUE(ConvertResponseHead(text, tunnel, via_text)) << text;
        ASSERT_TRUE(ConvertResponseHead(head, p, tunnel, direct));
        EXPECT_EQ(Fields(direct), Fields(via_text)) << raw << " cookies " << with_cookies;
        if (Fields(direct).find("Domain=.example.com; Secure; HttpOnly") != std::string::npos) {
          ++rewritten;
        }
      }
    }
  }
  EXPECT_GT(rewritten, 0);  // the policy did rewrite, so both paths were compared on it
}

TEST(ConvertResponseHead, FromTheParsedHeadRefusesAStatusOfOtherThanThreeDigits) {
  ResponseHead head;
  head.status = 1000;
  H2Response r;
  EXPECT_FALSE(ConvertResponseHead(head, DownstreamHeadParams{}, false, r));
  head.status = 99;
  EXPECT_FALSE(ConvertResponseHead(head, DownstreamHeadParams{}, false, r));
}

}  // namespace
}  // namespace onedomain::dataplane::h2
