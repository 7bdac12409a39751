#include "dataplane/http_proxy/local_reply.h"

#include <gtest/gtest.h>

#include <string>

namespace onedomain::dataplane {
namespace {

struct Case {
  ProxyErrorKind kind;
  int status;
  std::string_view words;
};

TEST(LocalReplyTest, EveryKindHasAPreciseStatusAndClearBody) {
  const Case cases[] = {
      {ProxyErrorKind::kMalformedRequest, 400, "malformed request"},
      {ProxyErrorKind::kSmuggling, 400, "ambiguous request framing"},
      {ProxyErrorKind::kBadHost, 400, "Host"},
      {ProxyErrorKind::kBadTarget, 400, "request-target"},
      {ProxyErrorKind::kPlainHttpOnTlsPort, 400, "expects TLS"},
      {ProxyErrorKind::kNoRoute, 404, "no route"},
      {ProxyErrorKind::kHeaderTimeout, 408, "not received in time"},
      {ProxyErrorKind::kBodyTimeout, 408, "body not received"},
      {ProxyErrorKind::kBodyTooLarge, 413, "too large"},
      {ProxyErrorKind::kHeaderTooLarge, 431, "too large"},
      {ProxyErrorKind::kUpstreamConnectFailed, 502, "refused"},
      {ProxyErrorKind::kUpstreamReset, 502, "closed the connection"},
      {ProxyErrorKind::kUpstreamBadResponse, 502, "malformed response"},
      {ProxyErrorKind::kNoHealthyUpstream, 503, "no healthy upstream"},
      {ProxyErrorKind::kUpstreamPoolFull, 503, "limit"},
      {ProxyErrorKind::kUpstreamConnectTimeout, 504, "timed out"},
      {ProxyErrorKind::kUpstreamResponseTimeout, 504, "in time"},
      {ProxyErrorKind::kRequestTimeout, 504, "in time"},
      {ProxyErrorKind::kRateLimited, 429, "too many requests"},
      {ProxyErrorKind::kTooManyWebSockets, 429, "too many WebSockets"},
  };
  for (const Case& c : cases) {
    std::string out;
    RequestRecord record;
    const int status = RenderLocalReply(ProxyError{c.kind, "detail here"}, {}, record, out);
    EXPECT_EQ(status, c.status) << NameOf(c.kind);
    EXPECT_EQ(StatusOf(c.kind), c.status);
    EXPECT_EQ(record.status, c.status);
    ASSERT_TRUE(record.error.has_value());
    EXPECT_EQ(*record.error, c.kind);
    EXPECT_TRUE(out.starts_with("HTTP/1.1 " + std::to_string(c.status) + " ")) << out;
    EXPECT_NE(out.find(c.words), std::string::npos) << out;
    EXPECT_NE(out.find("(detail here)"), std::string::npos);
    EXPECT_NE(out.find("Connection: close\r\n"), std::string::npos);
    // Content-Length matches the body.
    const size_t body_at = out.find("\r\n\r\n") + 4;
    EXPECT_NE(out.find("Content-Length: " + std::to_string(out.size() - body_at) + "\r\n"),
              std::string::npos);
    EXPECT_FALSE(NameOf(c.kind).empty());
  }
}

TEST(LocalReplyTest, TooManyRequestsSaysWhenToRetry) {
  std::string out;
  RequestRecord record;
  EXPECT_EQ(RenderLocalReply(ProxyError{ProxyErrorKind::kRateLimited, "upgrade rate", 7},
                             {.close = false}, record, out),
            429);
  EXPECT_EQ(out.rfind("HTTP/1.1 429 Too Many Requests\r\n", 0), 0u) << out;
  EXPECT_NE(out.find("\r\nRetry-After: 7\r\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("Connection: close"), std::string::npos) << out;
  // A refused request was read whole: the connection may serve the next one.
  EXPECT_TRUE(KeepAliveAfterLocalReply(ProxyErrorKind::kRateLimited, true));
  EXPECT_TRUE(KeepAliveAfterLocalReply(ProxyErrorKind::kTooManyWebSockets, true));
  // No Retry-After unless one is given.
  out.clear();
  RenderLocalReply(ProxyError{ProxyErrorKind::kNoRoute}, {}, record, out);
  EXPECT_EQ(out.find("Retry-After"), std::string::npos);
}

TEST(LocalReplyTest, HeadGetsNoBodyAndKeepAliveGetsNoClose) {
  std::string out;
  RequestRecord record;
  RenderLocalReply(ProxyError{ProxyErrorKind::kNoRoute}, {true, false}, record, out);
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));
  EXPECT_EQ(out.find("Connection: close"), std::string::npos);
  EXPECT_EQ(record.bytes_sent, out.size());
}

TEST(LocalReplyTest, KeepAliveOnlyWhenTheStreamPositionIsKnown) {
  EXPECT_TRUE(KeepAliveAfterLocalReply(ProxyErrorKind::kNoRoute, true));
  EXPECT_FALSE(KeepAliveAfterLocalReply(ProxyErrorKind::kNoRoute, false));
  EXPECT_TRUE(KeepAliveAfterLocalReply(ProxyErrorKind::kNoHealthyUpstream, true));
  EXPECT_FALSE(KeepAliveAfterLocalReply(ProxyErrorKind::kSmuggling, true));
  EXPECT_FALSE(KeepAliveAfterLocalReply(ProxyErrorKind::kHeaderTimeout, true));
  EXPECT_FALSE(KeepAliveAfterLocalReply(ProxyErrorKind::kUpstreamReset, true));
}

}  // namespace
}  // namespace onedomain::dataplane
