#include "dataplane/http_proxy/message_head.h"

#include <gtest/gtest.h>

#include <string>

namespace onedomain::dataplane {
namespace {

struct Parsed {
  bool complete = false;
  boost::system::error_code ec;
  std::optional<ProxyError> error;
};

Parsed ParseRequest(const std::string& bytes, RequestHead& head, uint32_t limit = 65536) {
  RequestHeadParser parser(head, limit);
  Parsed p;
  p.complete = parser.Feed(bytes, p.ec);
  if (p.ec) p.error = ClassifyRequestParseError(head, p.ec);
  return p;
}

TEST(MessageHeadTest, ParsesFieldsInOrderAsViews) {
  const std::string req =
      "GET /a?b=1 HTTP/1.1\r\nHost: x.example\r\nCookie: a=1; b=2\r\nCookie: c=3\r\n"
      "X-Empty:\r\n\r\nBODY";
  RequestHead head;
  const Parsed p = ParseRequest(req, head);
  ASSERT_TRUE(p.complete) << p.ec.message();
  EXPECT_EQ(head.method, http::verb::get);
  EXPECT_EQ(head.target, "/a?b=1");
  EXPECT_EQ(head.version, 11);
  EXPECT_EQ(head.host, "x.example");
  EXPECT_EQ(head.header_bytes, req.size() - 4);
  ASSERT_EQ(head.fields.size(), 4u);
  EXPECT_EQ(head.fields[1].value, "a=1; b=2");
  EXPECT_EQ(head.fields[2].value, "c=3");
  EXPECT_EQ(head.fields[3].value, "");
  // Views into the input: no copies.
  EXPECT_GE(head.fields[1].value.data(), req.data());
  EXPECT_LT(head.fields[1].value.data(), req.data() + req.size());
  EXPECT_TRUE(head.framing.keep_alive);
}

TEST(MessageHeadTest, NeedsMoreUntilTheBlankLine) {
  RequestHead head;
  RequestHeadParser parser(head, 65536);
  boost::system::error_code ec;
  const std::string full = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
  for (size_t n = 1; n < full.size() - 5; ++n) {
    EXPECT_FALSE(parser.Feed(std::string_view(full).substr(0, n), ec)) << n;
    EXPECT_FALSE(ec) << n << " " << ec.message();
  }
  EXPECT_TRUE(parser.Feed(full, ec));
  EXPECT_EQ(head.framing.content_length, 5u);
}

struct BadCase {
  const char* name;
  std::string request;
  ProxyErrorKind kind;
};

TEST(MessageHeadTest, SmugglingAndMalformedHeadsAreRejected) {
  const BadCase cases[] = {
      {"CL then TE",
       "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"TE then CL",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"differing CLs",
       "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"CL list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"bad CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"TE gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"TE twice",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"TE in 1.0", "POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"obs-fold empty first", "GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\n two\r\n\r\n",
       ProxyErrorKind::kSmuggling},
      {"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
       ProxyErrorKind::kMalformedRequest},
      {"bad name", "GET / HTTP/1.1\r\nHo(st: h\r\n\r\n", ProxyErrorKind::kMalformedRequest},
      {"leading space line", "GET / HTTP/1.1\r\n Host: h\r\n\r\n",
       ProxyErrorKind::kMalformedRequest},
      {"bare LF", "GET / HTTP/1.1\nHost: h\r\n\r\n", ProxyErrorKind::kMalformedRequest},
      {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", ProxyErrorKind::kMalformedRequest},
      {"control char", std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n"),
       ProxyErrorKind::kMalformedRequest},
  };
  for (const BadCase& c : cases) {
    RequestHead head;
    const Parsed p = ParseRequest(c.request, head);
    EXPECT_FALSE(p.complete) << c.name;
    ASSERT_TRUE(p.error.has_value()) << c.name;
    EXPECT_EQ(p.error->kind, c.kind) << c.name << ": " << NameOf(p.error->kind);
    EXPECT_EQ(StatusOf(p.error->kind), 400) << c.name;
  }
}

TEST(MessageHeadTest, OversizedHeadIs431) {
  std::string req = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(3000, 'a');
  RequestHead head;
  const Parsed p = ParseRequest(req, head, 2048);
  ASSERT_TRUE(p.error.has_value());
  EXPECT_EQ(p.error->kind, ProxyErrorKind::kHeaderTooLarge);
  EXPECT_EQ(StatusOf(p.error->kind), 431);
}

TEST(MessageHeadTest, ParsesResponsesAndTheirFraming) {
  ResponseHead r;
  {
    ResponseHeadParser parser(r, 65536, false);
    boost::system::error_code ec;
    ASSERT_TRUE(
        parser.Feed("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n",
                    ec));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.reason, "OK");
    EXPECT_TRUE(r.framing.chunked);
    EXPECT_FALSE(r.need_eof);
  }
  {
    ResponseHeadParser parser(r, 65536, true);  // answer to HEAD
    boost::system::error_code ec;
    ASSERT_TRUE(parser.Feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", ec));
    EXPECT_TRUE(r.no_body);
    EXPECT_EQ(r.framing.content_length, 10u);
  }
  {
    ResponseHeadParser parser(r, 65536, false);
    boost::system::error_code ec;
    ASSERT_TRUE(parser.Feed("HTTP/1.0 200 OK\r\nServer: old\r\n\r\n", ec));
    EXPECT_TRUE(r.need_eof);
    EXPECT_FALSE(r.framing.keep_alive);
  }
  for (const char* no_body :
       {"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n"}) {
    ResponseHeadParser parser(r, 65536, false);
    boost::system::error_code ec;
    ASSERT_TRUE(parser.Feed(no_body, ec)) << no_body;
    EXPECT_TRUE(r.no_body) << no_body;
  }
  {
    ResponseHeadParser parser(r, 65536, false);
    boost::system::error_code ec;
    EXPECT_FALSE(
        parser.Feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", ec));
    EXPECT_TRUE(ec);
  }
}

}  // namespace

// Feeds `full` as a client's bytes arrive: a growing prefix, each time in a fresh buffer (the
// session's read buffer moves when it grows). Returns whether the head completed.
template <typename Parser>
bool FeedInPieces(Parser& parser, const std::string& full, size_t step, std::string& last_copy,
                  boost::system::error_code& ec) {
  for (size_t n = std::min(step, full.size());; n = std::min(n + step, full.size())) {
    last_copy = full.substr(0, n);  // a new allocation every time
    if (parser.Feed(last_copy, ec)) return true;
    if (ec || n == full.size()) return false;
  }
}

TEST(MessageHeadTest, HeadSplitAcrossReadsParsesAtEverySplit) {
  const std::string full =
      "GET /api/v1/echo?x=1 HTTP/1.1\r\nHost: amir.hirecj.ai\r\nCookie: " + std::string(3000, 'c') +
      "\r\nUser-Agent: test\r\n\r\n";
  for (size_t step : {1u, 7u, 1448u, 17u, 3000u}) {
    RequestHead head;
    RequestHeadParser parser(head, 65536);
    boost::system::error_code ec;
    std::string copy;
    ASSERT_TRUE(FeedInPieces(parser, full, step, copy, ec)) << step << " " << ec.message();
    EXPECT_EQ(head.method, http::verb::get);
    EXPECT_EQ(head.target, "/api/v1/echo?x=1");
    EXPECT_EQ(head.host, "amir.hirecj.ai");
    ASSERT_EQ(head.fields.size(), 3u);
    EXPECT_EQ(head.fields[1].value.size(), 3000u);
    EXPECT_EQ(head.header_bytes, full.size());
    // The views point into the last buffer fed, not an earlier one.
    EXPECT_GE(head.target.data(), copy.data());
    EXPECT_LT(head.target.data(), copy.data() + copy.size());
  }
}

TEST(MessageHeadTest, HeadsUpToTheLimitParseInPiecesAndOneByteMoreIs431) {
  // 64 KiB is the documented limit; reads are 16 KiB, so such a head always takes several.
  std::string head_bytes = "GET / HTTP/1.1\r\nHost: h\r\n";
  while (head_bytes.size() < 65536 - 200) head_bytes += "X-Pad: " + std::string(90, 'p') + "\r\n";
  head_bytes += "X-Last: " + std::string(65536 - head_bytes.size() - 12, 'l') + "\r\n\r\n";
  ASSERT_EQ(head_bytes.size(), 65536u);
  {
    RequestHead head;
    RequestHeadParser parser(head, 65536);
    boost::system::error_code ec;
    std::string copy;
    EXPECT_TRUE(FeedInPieces(parser, head_bytes, 16384, copy, ec)) << ec.message();
    EXPECT_EQ(head.header_bytes, 65536u);
  }
  {
    const std::string over = "GET / HTTP/1.1\r\nX: 1" + head_bytes.substr(16);
    RequestHead head;
    RequestHeadParser parser(head, 65536);
    boost::system::error_code ec;
    std::string copy;
    EXPECT_FALSE(FeedInPieces(parser, over, 16384, copy, ec));
    ASSERT_TRUE(ec);
    EXPECT_EQ(ClassifyRequestParseError(head, ec).kind, ProxyErrorKind::kHeaderTooLarge);
  }
}

TEST(MessageHeadTest, ResponseHeadSplitAcrossReadsWithManySetCookies) {
  std::string full = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n";
  for (int i = 0; i < 100; ++i) {
    full += "Set-Cookie: c" + std::to_string(i) + "=" + std::string(200, 'v') + "; Path=/\r\n";
  }
  full += "\r\n";
  ASSERT_GT(full.size(), 16384u);
  for (size_t step : {1u, 7u, 1448u, 16384u}) {
    ResponseHead r;
    ResponseHeadParser parser(r, 65536, false);
    boost::system::error_code ec;
    std::string copy;
    ASSERT_TRUE(FeedInPieces(parser, full + "ok", step, copy, ec)) << step << ec.message();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.fields.size(), 101u);
    EXPECT_EQ(r.framing.content_length, 2u);
    EXPECT_EQ(r.header_bytes, full.size());
  }
}

TEST(MessageHeadTest, RebaseFollowsTheBytesToTheirNewPlace) {
  const std::string a = "GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
  RequestHead head;
  const Parsed p = ParseRequest(a, head);
  ASSERT_TRUE(p.complete);
  const std::string b = a;  // the same bytes elsewhere
  head.Rebase(a.data(), a.size(), b.data());
  EXPECT_EQ(head.target.data(), b.data() + 4);
  EXPECT_EQ(head.host, "h");
  EXPECT_GE(head.host.data(), b.data());
  EXPECT_EQ(head.upgrade, "websocket");
  EXPECT_GE(head.fields[1].value.data(), b.data());
}

TEST(MessageHeadTest, BareLfIsRefusedAtOnceNotAfterTheTimeout) {
  for (const std::string& raw :
       {std::string("GET / HTTP/1.1\nHost: h\n\n"), std::string("GET / HTTP/1.1\r\nHost: h\n"),
        std::string("GET / HTTP/1.1\r\nHost: h\r\n\n")}) {
    RequestHead head;
    const Parsed p = ParseRequest(raw, head);
    EXPECT_FALSE(p.complete) << raw;
    ASSERT_TRUE(p.error.has_value()) << raw;  // an answer now, not "need more"
    EXPECT_EQ(StatusOf(p.error->kind), 400) << raw;
  }
  ResponseHead r;
  ResponseHeadParser parser(r, 65536, false);
  boost::system::error_code ec;
  EXPECT_FALSE(parser.Feed("HTTP/1.1 200 OK\nContent-Length: 0\n\n", ec));
  EXPECT_TRUE(ec);
}

TEST(MessageHeadTest, ResponsesWithACodingOtherThanChunkedAreRefused) {
  for (const std::string& te :
       {std::string("gzip"), std::string("chunked, gzip"), std::string("xchunked")}) {
    const std::string raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + "\r\n\r\n";
    ResponseHead r;
    ResponseHeadParser parser(r, 65536, false);
    boost::system::error_code ec;
    EXPECT_FALSE(parser.Feed(raw, ec)) << te;
    EXPECT_TRUE(ec) << te;
  }
}

}  // namespace onedomain::dataplane
